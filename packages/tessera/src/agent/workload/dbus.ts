// A D-Bus client for method calls, and only that: connect to one address (a bus, or a peer such as
// systemd's private socket), authenticate with EXTERNAL (the kernel's peer credentials), send a
// METHOD_CALL, read its METHOD_RETURN or ERROR. Values are marshalled by signature in the D-Bus
// wire format (dbus-specification, "Message Protocol"); both byte orders are read, little-endian is
// written. No signals, no names owned, no file descriptors.
//
// Why not an npm library: dbus-next 0.10.2 (the usual choice) rejects a promise nobody handles
// when the peer answers Hello with an error (systemd's private socket does), which ends a Node 20
// process, and a call on a connection that failed to open never settles; the forks are untyped
// callback APIs. What the systemd attestor needs is two calls with four wire types.
import net from 'node:net';

/** A D-Bus value as read or written: numbers for the integer types up to 32 bits, bigint for 64. */
export type DbusValue = string | number | bigint | boolean | DbusVariant | DbusValue[];
export interface DbusVariant {
  readonly signature: string;
  readonly value: DbusValue;
}

/** An ERROR reply: `name` is the D-Bus error name (org.freedesktop.systemd1.NoUnitForPID). */
export class DbusError extends Error {
  override readonly name = 'DbusError';
  readonly errorName: string;
  constructor(errorName: string, message: string) {
    super(message === '' ? errorName : `${errorName}: ${message}`);
    this.errorName = errorName;
  }
}

export interface DbusCall {
  destination?: string;
  path: string;
  interface: string;
  member: string;
  signature?: string;
  body?: DbusValue[];
}

export interface DbusReply {
  signature: string;
  body: DbusValue[];
}

export interface DbusConnection {
  /** Sends a method call; resolves with the reply body, rejects with DbusError or a connection error. */
  call(msg: DbusCall, signal?: AbortSignal): Promise<DbusReply>;
  /** True until the socket closes (then every pending call has been rejected). */
  readonly open: boolean;
  close(): void;
}

/** How often a connection whose Hello is unanswered is nudged (see connectDbus). */
const NUDGE_MS = 100;

/** The largest message read; larger is a protocol error (the spec's limit is 128 MiB). */
const MAX_MESSAGE = 1 << 20;

/**
 * The socket path of a D-Bus address `unix:path=/run/dbus/system_bus_socket` or
 * `unix:abstract=name` (values %-escaped as the spec allows); undefined with `why` otherwise.
 */
export function parseDbusAddress(address: string): { path: string } | { why: string } {
  const m = /^unix:(path|abstract)=([^,;]+)$/.exec(address);
  if (m === null)
    return {
      why: `D-Bus address ${JSON.stringify(address)} is not unix:path=<absolute path> or unix:abstract=<name> (one address; tcp and other transports are not supported)`,
    };
  let value: string;
  try {
    value = decodeURIComponent(m[2] as string);
  } catch {
    return { why: `D-Bus address ${JSON.stringify(address)} has a bad %-escape` };
  }
  if (m[1] === 'path' && !value.startsWith('/'))
    return { why: `D-Bus address ${JSON.stringify(address)}: the path must be absolute` };
  return { path: m[1] === 'abstract' ? `\0${value}` : value };
}

// --- marshalling -----------------------------------------------------------------------------

const ALIGN: Record<string, number> = {
  y: 1,
  b: 4,
  n: 2,
  q: 2,
  i: 4,
  u: 4,
  x: 8,
  t: 8,
  d: 8,
  s: 4,
  o: 4,
  g: 1,
  v: 1,
  a: 4,
  '(': 8,
  '{': 8,
  h: 4,
};

/** Splits a signature into complete types ("a{sv}s" → ["a{sv}", "s"]); throws on a malformed one. */
export function splitSignature(sig: string): string[] {
  const out: string[] = [];
  let i = 0;
  const one = (): void => {
    const c = sig[i];
    if (c === undefined) throw new Error(`D-Bus signature ${JSON.stringify(sig)} ends early`);
    i++;
    if (c === 'a') {
      one();
      return;
    }
    if (c === '(' || c === '{') {
      const close = c === '(' ? ')' : '}';
      while (sig[i] !== close) {
        if (i >= sig.length) throw new Error(`D-Bus signature ${JSON.stringify(sig)} is not closed`);
        one();
      }
      i++;
      return;
    }
    if (!(c in ALIGN) || c === 'h') throw new Error(`D-Bus signature ${JSON.stringify(sig)} has type ${c}`);
  };
  while (i < sig.length) {
    const start = i;
    one();
    out.push(sig.slice(start, i));
  }
  return out;
}

class Writer {
  #buf = Buffer.alloc(256);
  length = 0;
  #room(n: number) {
    if (this.length + n <= this.#buf.length) return;
    const next = Buffer.alloc(Math.max(this.#buf.length * 2, this.length + n));
    this.#buf.copy(next, 0, 0, this.length);
    this.#buf = next;
  }
  pad(to: number) {
    const n = (to - (this.length % to)) % to;
    this.#room(n);
    this.#buf.fill(0, this.length, this.length + n);
    this.length += n;
  }
  bytes(b: Buffer) {
    this.#room(b.length);
    b.copy(this.#buf, this.length);
    this.length += b.length;
  }
  u32At(offset: number, v: number) {
    this.#buf.writeUInt32LE(v, offset);
  }
  value(type: string, v: DbusValue): void {
    const c = type[0] as string;
    this.pad(ALIGN[c] ?? 1);
    const num = (n: number, write: (b: Buffer) => void) => {
      const b = Buffer.alloc(n);
      write(b);
      this.bytes(b);
    };
    switch (c) {
      case 'y':
        num(1, (b) => b.writeUInt8(Number(v)));
        return;
      case 'b':
        num(4, (b) => b.writeUInt32LE(v === true ? 1 : 0));
        return;
      case 'n':
        num(2, (b) => b.writeInt16LE(Number(v)));
        return;
      case 'q':
        num(2, (b) => b.writeUInt16LE(Number(v)));
        return;
      case 'i':
        num(4, (b) => b.writeInt32LE(Number(v)));
        return;
      case 'u':
        num(4, (b) => b.writeUInt32LE(Number(v)));
        return;
      case 'x':
        num(8, (b) => b.writeBigInt64LE(BigInt(v as number | bigint)));
        return;
      case 't':
        num(8, (b) => b.writeBigUInt64LE(BigInt(v as number | bigint)));
        return;
      case 'd':
        num(8, (b) => b.writeDoubleLE(Number(v)));
        return;
      case 's':
      case 'o': {
        const s = Buffer.from(String(v), 'utf8');
        num(4, (b) => b.writeUInt32LE(s.length));
        this.bytes(s);
        this.bytes(Buffer.alloc(1));
        return;
      }
      case 'g': {
        const s = Buffer.from(String(v), 'ascii');
        num(1, (b) => b.writeUInt8(s.length));
        this.bytes(s);
        this.bytes(Buffer.alloc(1));
        return;
      }
      case 'v': {
        const variant = v as DbusVariant;
        this.value('g', variant.signature);
        this.value(variant.signature, variant.value);
        return;
      }
      case 'a': {
        const elem = type.slice(1);
        const lengthAt = this.length;
        num(4, () => undefined);
        this.pad(ALIGN[elem[0] as string] ?? 1);
        const start = this.length;
        for (const item of v as DbusValue[]) this.value(elem, item);
        this.u32At(lengthAt, this.length - start);
        return;
      }
      case '(':
      case '{': {
        const fields = splitSignature(type.slice(1, -1));
        const items = v as DbusValue[];
        for (const [k, f] of fields.entries()) this.value(f, items[k] as DbusValue);
        return;
      }
      default:
        throw new Error(`dbus: cannot write type ${type}`);
    }
  }
  result() {
    return this.#buf.subarray(0, this.length);
  }
}

class Reader {
  readonly #buf: Buffer;
  readonly #le: boolean;
  offset: number;
  constructor(buf: Buffer, le: boolean, offset = 0) {
    this.#buf = buf;
    this.#le = le;
    this.offset = offset;
  }
  #need(n: number) {
    if (this.offset + n > this.#buf.length) throw new Error('dbus: message truncated');
  }
  pad(to: number) {
    this.offset += (to - (this.offset % to)) % to;
  }
  #num(n: number, le: (o: number) => number | bigint, be: (o: number) => number | bigint) {
    this.#need(n);
    const v = this.#le ? le(this.offset) : be(this.offset);
    this.offset += n;
    return v;
  }
  u32(): number {
    const b = this.#buf;
    return this.#num(
      4,
      (o) => b.readUInt32LE(o),
      (o) => b.readUInt32BE(o),
    ) as number;
  }
  #string(length: number, encoding: BufferEncoding) {
    this.#need(length + 1);
    const s = this.#buf.toString(encoding, this.offset, this.offset + length);
    if (this.#buf[this.offset + length] !== 0) throw new Error('dbus: string without its NUL');
    this.offset += length + 1;
    return s;
  }
  value(type: string, depth = 0): DbusValue {
    if (depth > 32) throw new Error('dbus: value nested too deeply');
    const c = type[0] as string;
    this.pad(ALIGN[c] ?? 1);
    const b = this.#buf;
    switch (c) {
      case 'y':
        return this.#num(
          1,
          (o) => b.readUInt8(o),
          (o) => b.readUInt8(o),
        );
      case 'b':
        return this.u32() !== 0;
      case 'n':
        return this.#num(
          2,
          (o) => b.readInt16LE(o),
          (o) => b.readInt16BE(o),
        );
      case 'q':
        return this.#num(
          2,
          (o) => b.readUInt16LE(o),
          (o) => b.readUInt16BE(o),
        );
      case 'i':
        return this.#num(
          4,
          (o) => b.readInt32LE(o),
          (o) => b.readInt32BE(o),
        );
      case 'u':
        return this.u32();
      case 'x':
        return this.#num(
          8,
          (o) => b.readBigInt64LE(o),
          (o) => b.readBigInt64BE(o),
        );
      case 't':
        return this.#num(
          8,
          (o) => b.readBigUInt64LE(o),
          (o) => b.readBigUInt64BE(o),
        );
      case 'd':
        return this.#num(
          8,
          (o) => b.readDoubleLE(o),
          (o) => b.readDoubleBE(o),
        );
      case 's':
      case 'o':
        return this.#string(this.u32(), 'utf8');
      case 'g':
        return this.#string(this.value('y') as number, 'ascii');
      case 'v': {
        const signature = this.value('g') as string;
        const [one, ...more] = splitSignature(signature);
        if (one === undefined || more.length > 0)
          throw new Error(`dbus: variant signature ${JSON.stringify(signature)} is not one type`);
        return { signature, value: this.value(one, depth + 1) };
      }
      case 'a': {
        const length = this.u32();
        if (length > MAX_MESSAGE) throw new Error('dbus: array too long');
        const elem = type.slice(1);
        this.pad(ALIGN[elem[0] as string] ?? 1);
        const end = this.offset + length;
        this.#need(length);
        const out: DbusValue[] = [];
        while (this.offset < end) out.push(this.value(elem, depth + 1));
        if (this.offset !== end) throw new Error('dbus: array length does not match its items');
        return out;
      }
      case '(':
      case '{':
        return splitSignature(type.slice(1, -1)).map((f) => this.value(f, depth + 1));
      default:
        throw new Error(`dbus: cannot read type ${type}`);
    }
  }
}

const Type = { METHOD_CALL: 1, METHOD_RETURN: 2, ERROR: 3 } as const;
const FIELD = {
  PATH: 1,
  INTERFACE: 2,
  MEMBER: 3,
  ERROR_NAME: 4,
  REPLY_SERIAL: 5,
  DESTINATION: 6,
  SIGNATURE: 8,
};

/** The bytes of a METHOD_CALL message. Exported for tests. */
export function encodeCall(serial: number, msg: DbusCall): Buffer {
  const fields: DbusValue[] = [
    [FIELD.PATH, { signature: 'o', value: msg.path }],
    [FIELD.INTERFACE, { signature: 's', value: msg.interface }],
    [FIELD.MEMBER, { signature: 's', value: msg.member }],
  ];
  if (msg.destination !== undefined)
    fields.push([FIELD.DESTINATION, { signature: 's', value: msg.destination }]);
  const signature = msg.signature ?? '';
  if (signature !== '') fields.push([FIELD.SIGNATURE, { signature: 'g', value: signature }]);
  const body = new Writer();
  const types = splitSignature(signature);
  const values = msg.body ?? [];
  if (types.length !== values.length)
    throw new TypeError(
      `dbus: signature ${JSON.stringify(signature)} wants ${types.length} values, got ${values.length}`,
    );
  for (const [k, t] of types.entries()) body.value(t, values[k] as DbusValue);
  const w = new Writer();
  w.bytes(Buffer.from([0x6c /* 'l' */, Type.METHOD_CALL, 0, 1]));
  w.value('u', body.length);
  w.value('u', serial);
  w.value('a(yv)', fields);
  w.pad(8);
  w.bytes(body.result());
  return Buffer.from(w.result());
}

interface Decoded {
  type: number;
  replySerial?: number;
  errorName?: string;
  signature: string;
  body: DbusValue[];
}

/** The length of the message at the start of `buf`, once its fixed header is there. */
function messageLength(buf: Buffer): number | undefined {
  if (buf.length < 16) return undefined;
  const le = buf[0] === 0x6c;
  if (!le && buf[0] !== 0x42) throw new Error('dbus: bad byte order mark');
  const bodyLength = le ? buf.readUInt32LE(4) : buf.readUInt32BE(4);
  const fieldsLength = le ? buf.readUInt32LE(12) : buf.readUInt32BE(12);
  const total = 16 + fieldsLength + ((8 - (fieldsLength % 8)) % 8) + bodyLength;
  if (total > MAX_MESSAGE)
    throw new Error(`dbus: a message of ${total} bytes is over the ${MAX_MESSAGE}-byte limit`);
  return total;
}

/** Parses one whole message. Exported for tests. */
export function decodeMessage(buf: Buffer): Decoded {
  const le = buf[0] === 0x6c;
  const r = new Reader(buf, le, 4);
  const bodyLength = r.u32();
  r.u32(); // serial
  const fields = r.value('a(yv)') as [number, DbusVariant][];
  r.pad(8);
  const out: Decoded = { type: buf[1] as number, signature: '', body: [] };
  for (const [code, v] of fields) {
    if (code === FIELD.REPLY_SERIAL && v.signature === 'u') out.replySerial = v.value as number;
    else if (code === FIELD.ERROR_NAME && v.signature === 's') out.errorName = v.value as string;
    else if (code === FIELD.SIGNATURE && v.signature === 'g') out.signature = v.value as string;
  }
  const bodyStart = r.offset;
  for (const t of splitSignature(out.signature)) out.body.push(r.value(t));
  if (r.offset !== bodyStart + bodyLength) throw new Error('dbus: body length does not match its signature');
  return out;
}

// --- the connection --------------------------------------------------------------------------

/**
 * Connects to `address` (parseDbusAddress) and authenticates. On a bus it says Hello, as every
 * bus client must; a peer that answers Hello with an error is a direct connection (systemd's
 * private socket), where calls go without a destination. Rejects when the socket cannot be
 * opened, the peer refuses EXTERNAL authentication, or `signal` aborts first.
 */
export async function connectDbus(address: string, signal?: AbortSignal): Promise<DbusConnection> {
  const parsed = parseDbusAddress(address);
  if ('why' in parsed) throw new Error(parsed.why);
  const socket = net.createConnection({ path: parsed.path });
  let open = true;
  let serial = 0;
  let buffered: Buffer = Buffer.alloc(0);
  const pending = new Map<number, { resolve: (r: DbusReply) => void; reject: (e: Error) => void }>();
  let failure: Error | undefined;
  const fail = (err: Error) => {
    if (!open) return;
    open = false;
    failure = err;
    for (const p of pending.values()) p.reject(err);
    pending.clear();
    socket.destroy();
  };
  socket.on('error', (err) =>
    fail(
      new Error(`dbus: ${address}: ${(err as NodeJS.ErrnoException).code ?? err.message}`, { cause: err }),
    ),
  );
  socket.on('close', () => fail(new Error(`dbus: ${address}: the connection closed`)));

  // Authentication: a NUL byte, AUTH EXTERNAL <uid in hex>, then BEGIN after the server's OK.
  await new Promise<void>((resolve, reject) => {
    let text = '';
    const onAbort = () => {
      fail(new Error(`dbus: ${address}: ${String(signal?.reason ?? 'aborted')}`));
    };
    const done = (err?: Error) => {
      socket.off('data', onData);
      socket.off('close', onClose);
      signal?.removeEventListener('abort', onAbort);
      if (err === undefined) resolve();
      else reject(err);
    };
    const onClose = () => done(failure ?? new Error(`dbus: ${address}: the connection closed`));
    const onData = (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (text.length > 4096)
        return done(new Error(`dbus: ${address}: the peer sent no authentication answer`));
      const end = text.indexOf('\r\n');
      if (end < 0) return;
      const line = text.slice(0, end);
      if (!line.startsWith('OK ')) {
        fail(new Error(`dbus: ${address}: EXTERNAL authentication refused (${line.slice(0, 120)})`));
        return done(failure);
      }
      buffered = Buffer.from(text.slice(end + 2), 'latin1');
      socket.write('BEGIN\r\n');
      done();
    };
    if (signal?.aborted === true) return onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    socket.on('data', onData);
    socket.on('close', onClose);
    const uid = String(process.getuid?.() ?? 0);
    socket.write(
      Buffer.concat([Buffer.from([0]), Buffer.from(`AUTH EXTERNAL ${Buffer.from(uid).toString('hex')}\r\n`)]),
    );
  });

  const onMessages = (chunk: Buffer) => {
    buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
    try {
      for (
        let length = messageLength(buffered);
        length !== undefined && buffered.length >= length;
        length = messageLength(buffered)
      ) {
        const m = decodeMessage(buffered.subarray(0, length));
        buffered = buffered.subarray(length);
        if (m.replySerial === undefined) continue; // a signal, or a call to us: not answered
        const p = pending.get(m.replySerial);
        if (p === undefined) continue;
        pending.delete(m.replySerial);
        if (m.type === Type.ERROR)
          p.reject(
            new DbusError(
              m.errorName ?? 'org.freedesktop.DBus.Error.Failed',
              typeof m.body[0] === 'string' ? m.body[0] : '',
            ),
          );
        else if (m.type === Type.METHOD_RETURN) p.resolve({ signature: m.signature, body: m.body });
      }
    } catch (err) {
      fail(new Error(`dbus: ${address}: ${(err as Error).message}`, { cause: err }));
    }
  };
  socket.on('data', onMessages);

  let direct = false;
  const conn: DbusConnection = {
    get open() {
      return open;
    },
    call(msg, callSignal) {
      if (!open) return Promise.reject(failure ?? new Error(`dbus: ${address}: closed`));
      if (callSignal?.aborted === true) return Promise.reject(new Error(String(callSignal.reason)));
      serial = (serial % 0xffffffff) + 1;
      const id = serial;
      const bytes = encodeCall(id, direct ? { ...msg, destination: undefined } : msg);
      return new Promise<DbusReply>((resolve, reject) => {
        const onAbort = () => {
          pending.delete(id);
          reject(
            callSignal?.reason instanceof Error ? callSignal.reason : new Error(String(callSignal?.reason)),
          );
        };
        callSignal?.addEventListener('abort', onAbort, { once: true });
        const settle =
          <T>(f: (v: T) => void) =>
          (v: T) => {
            callSignal?.removeEventListener('abort', onAbort);
            f(v);
          };
        pending.set(id, { resolve: settle(resolve), reject: settle(reject) });
        socket.write(bytes);
      });
    },
    close() {
      fail(new Error(`dbus: ${address}: closed`));
    },
  };
  // systemd's private socket (systemd 252 at least) leaves a message that arrives with or right
  // after BEGIN unread until more bytes come; until Hello is answered, a Peer.Ping (its answer
  // ignored) is sent every NUDGE_MS so that it reads on. A bus daemon answers before the first.
  const nudge = setInterval(() => {
    if (!open) return;
    serial = (serial % 0xffffffff) + 1;
    socket.write(encodeCall(serial, { path: '/', interface: 'org.freedesktop.DBus.Peer', member: 'Ping' }));
  }, NUDGE_MS);
  try {
    await conn.call(
      {
        destination: 'org.freedesktop.DBus',
        path: '/org/freedesktop/DBus',
        interface: 'org.freedesktop.DBus',
        member: 'Hello',
      },
      signal,
    );
  } catch (err) {
    if (!(err instanceof DbusError)) {
      conn.close();
      throw err;
    }
    direct = true;
  } finally {
    clearInterval(nudge);
  }
  return conn;
}

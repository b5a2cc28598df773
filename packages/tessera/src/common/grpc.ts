// grpc-js services and clients from the protobuf-es descriptors in src/gen: one place that turns a
// GenService into a ServiceDefinition, types the handlers, and maps TesseraError codes to gRPC
// statuses (and back, for the CLI). The Workload API in the spiffe package has its own hand-written
// definition because that package depends on nothing in this one.
import {
  create,
  type DescMessage,
  type DescMethod,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from '@bufbuild/protobuf';
import type { GenService, GenServiceMethods } from '@bufbuild/protobuf/codegenv2';
import * as grpc from '@grpc/grpc-js';
import { isTesseraError, TesseraErrorCode } from './errors.js';

/** Largest message either side accepts; an oversized one gets RESOURCE_EXHAUSTED. */
export const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

/** Trailer carrying the stable TesseraError code next to the gRPC status. */
export const ERROR_CODE_METADATA = 'tessera-error-code';

type Method = Pick<DescMethod, 'input' | 'output' | 'methodKind'>;
type In<M extends Method> = MessageShape<M['input']>;
type Out<M extends Method> = MessageShape<M['output']>;

type Handler<M extends Method> = M['methodKind'] extends 'unary'
  ? (request: In<M>, call: grpc.ServerUnaryCall<In<M>, Out<M>>) => Promise<MessageInitShape<M['output']>>
  : M['methodKind'] extends 'server_streaming'
    ? (call: grpc.ServerWritableStream<In<M>, Out<M>>) => void
    : M['methodKind'] extends 'bidi_streaming'
      ? (call: grpc.ServerDuplexStream<In<M>, Out<M>>) => void
      : never;

/** One handler per method of the service: unary ones are async functions returning the response. */
export type ServiceHandlers<S extends GenServiceMethods> = { [K in keyof S]: Handler<S[K]> };

function codec<T extends DescMessage>(schema: T) {
  return {
    serialize: (m: MessageShape<T>) => Buffer.from(toBinary(schema, m)),
    deserialize: (b: Buffer) => fromBinary(schema, b),
  };
}

/** The grpc-js ServiceDefinition of a generated service, keyed by the methods' local names. */
export function grpcServiceDefinition<S extends GenServiceMethods>(
  service: GenService<S>,
): grpc.ServiceDefinition {
  const def: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const m of service.methods) {
    const i = codec(m.input);
    const o = codec(m.output);
    def[m.localName] = {
      path: `/${service.typeName}/${m.name}`,
      requestStream: m.methodKind === 'client_streaming' || m.methodKind === 'bidi_streaming',
      responseStream: m.methodKind === 'server_streaming' || m.methodKind === 'bidi_streaming',
      requestSerialize: i.serialize as (v: unknown) => Buffer,
      requestDeserialize: i.deserialize,
      responseSerialize: o.serialize as (v: unknown) => Buffer,
      responseDeserialize: o.deserialize,
      originalName: m.localName,
    };
  }
  return def;
}

/** The gRPC status for an error a handler threw; unknown errors are INTERNAL and not shown to the caller. */
export function toGrpcStatus(err: unknown): { code: grpc.status; details: string; metadata: grpc.Metadata } {
  const metadata = new grpc.Metadata();
  if (!isTesseraError(err))
    return { code: grpc.status.INTERNAL, details: 'internal error; see the server log', metadata };
  metadata.set(ERROR_CODE_METADATA, err.code);
  const C = TesseraErrorCode;
  const code: grpc.status = (
    {
      [C.ENTRY_NOT_FOUND]: grpc.status.NOT_FOUND,
      [C.AGENT_NOT_FOUND]: grpc.status.NOT_FOUND,
      [C.BUNDLE_NOT_FOUND]: grpc.status.NOT_FOUND,
      [C.FEDERATION_NOT_FOUND]: grpc.status.NOT_FOUND,
      [C.X509_SVID_NOT_FOUND]: grpc.status.NOT_FOUND,
      [C.FEDERATION_EXISTS]: grpc.status.ALREADY_EXISTS,
      [C.FEDERATION_FETCH]: grpc.status.UNAVAILABLE,
      [C.ENTRY_DUPLICATE]: grpc.status.ALREADY_EXISTS,
      [C.ENTRY_INVALID]: grpc.status.INVALID_ARGUMENT,
      [C.CSR_INVALID]: grpc.status.INVALID_ARGUMENT,
      [C.INVALID_ARGUMENT]: grpc.status.INVALID_ARGUMENT,
      [C.CA_ISSUE]: grpc.status.INVALID_ARGUMENT,
      [C.REVISION_CONFLICT]: grpc.status.ABORTED,
      [C.JOIN_TOKEN_INVALID]: grpc.status.PERMISSION_DENIED,
      [C.ATTESTATION_FAILED]: grpc.status.PERMISSION_DENIED,
      [C.AGENT_BANNED]: grpc.status.PERMISSION_DENIED,
      [C.PERMISSION_DENIED]: grpc.status.PERMISSION_DENIED,
      [C.DATASTORE]: grpc.status.UNAVAILABLE,
      [C.KEY_FILE]: grpc.status.INTERNAL,
      [C.STARTUP]: grpc.status.INTERNAL,
    } as Record<TesseraErrorCode, grpc.status>
  )[err.code];
  return { code: code ?? grpc.status.INTERNAL, details: err.message, metadata };
}

/**
 * The implementation object for grpc-js: unary handlers' promises become callbacks and their
 * errors statuses; `onError` sees every error (to log the unexpected ones).
 */
export function grpcImplementation<S extends GenServiceMethods>(
  service: GenService<S>,
  handlers: ServiceHandlers<S>,
  onError: (method: string, err: unknown) => void,
): grpc.UntypedServiceImplementation {
  const impl: grpc.UntypedServiceImplementation = {};
  for (const m of service.methods) {
    const h = (handlers as Record<string, unknown>)[m.localName] as (...args: unknown[]) => unknown;
    if (m.methodKind !== 'unary') {
      impl[m.localName] = h as grpc.UntypedHandleCall;
      continue;
    }
    const schema = m.output;
    impl[m.localName] = ((
      call: grpc.ServerUnaryCall<unknown, unknown>,
      callback: grpc.sendUnaryData<unknown>,
    ) => {
      (h(call.request, call) as Promise<MessageInitShape<DescMessage>>).then(
        (res) => callback(null, create(schema, res)),
        (err: unknown) => {
          onError(m.name, err);
          const s = toGrpcStatus(err);
          callback({ code: s.code, details: s.details, metadata: s.metadata });
        },
      );
    }) as grpc.UntypedHandleCall;
  }
  return impl;
}

/** Ends a stream with the status for `err`. */
export function endWithError(
  call: grpc.ServerWritableStream<unknown, unknown> | grpc.ServerDuplexStream<unknown, unknown>,
  err: unknown,
): void {
  const s = toGrpcStatus(err);
  call.emit('error', { code: s.code, details: s.details, metadata: s.metadata });
}

/** A typed client over a grpc-js channel: unary calls as promises, streams as grpc-js streams. */
export class ServiceClient<S extends GenServiceMethods> {
  readonly raw: grpc.Client;
  readonly #service: GenService<S>;

  constructor(
    service: GenService<S>,
    address: string,
    credentials: grpc.ChannelCredentials,
    options: grpc.ChannelOptions = {},
  ) {
    this.#service = service;
    this.raw = new grpc.Client(address, credentials, {
      'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
      'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
      ...options,
    });
  }

  #path(m: Method & DescMethod): string {
    return `/${this.#service.typeName}/${m.name}`;
  }

  unary<M extends Method & DescMethod>(
    m: M,
    request: MessageInitShape<M['input']>,
    options: { deadline?: Date; metadata?: grpc.Metadata } = {},
  ): Promise<Out<M>> {
    const i = codec(m.input);
    const o = codec(m.output);
    return new Promise((resolve, reject) => {
      this.raw.makeUnaryRequest(
        this.#path(m),
        i.serialize,
        o.deserialize,
        create(m.input, request),
        options.metadata ?? new grpc.Metadata(),
        options.deadline === undefined ? {} : { deadline: options.deadline },
        (err, res) => (err !== null && err !== undefined ? reject(err) : resolve(res as Out<M>)),
      );
    });
  }

  serverStream<M extends Method & DescMethod>(
    m: M,
    request: MessageInitShape<M['input']>,
  ): grpc.ClientReadableStream<Out<M>> {
    const i = codec(m.input);
    const o = codec(m.output);
    return this.raw.makeServerStreamRequest(
      this.#path(m),
      i.serialize,
      o.deserialize,
      create(m.input, request),
    ) as grpc.ClientReadableStream<Out<M>>;
  }

  bidiStream<M extends Method & DescMethod>(m: M): grpc.ClientDuplexStream<In<M>, Out<M>> {
    const i = codec(m.input);
    const o = codec(m.output);
    return this.raw.makeBidiStreamRequest(
      this.#path(m),
      i.serialize,
      o.deserialize,
    ) as unknown as grpc.ClientDuplexStream<In<M>, Out<M>>;
  }

  close(): void {
    this.raw.close();
  }
}

/** The TesseraError code a failed call carried, if the server sent one. */
export function errorCodeOf(err: unknown): string | undefined {
  const md = (err as { metadata?: grpc.Metadata }).metadata;
  const v = md?.get(ERROR_CODE_METADATA)[0];
  return typeof v === 'string' ? v : undefined;
}

/**
 * What went wrong with a gRPC call, for logs and messages: the peer's message (the status details),
 * else the error's own; grpc-js's empty "Resolution note: " tail is dropped.
 */
export function grpcErrorText(err: unknown): string {
  const e = err as { details?: unknown; message?: unknown };
  const text = typeof e.details === 'string' && e.details !== '' ? e.details : String(e.message ?? err);
  return text.replace(/\.? Resolution note: ?$/, '');
}

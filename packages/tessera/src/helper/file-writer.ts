// Atomic file replacement for the helper's outputs: a reader of the path sees the old file or the
// new one, never a part of either, and the mode is the configured one after every write (the new
// file is created with it, chmod'ed past the umask, then renamed over the old one).
import { randomBytes } from 'node:crypto';
import { closeSync, fchmodSync, fsyncSync, openSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { TesseraError, TesseraErrorCode } from '../common/errors.js';

/** What to do about a failed write, by errno, for the message. */
function advice(code: string | undefined, dir: string): string {
  switch (code) {
    case 'ENOENT':
      return `the directory ${dir} does not exist: create it (cert_dir must exist before the helper starts)`;
    case 'ENOTDIR':
      return `${dir} is not a directory: point cert_dir at a directory`;
    case 'EACCES':
    case 'EPERM':
      return `uid ${process.getuid?.() ?? '?'} may not write in ${dir}: chown or chmod it, or run the helper as its owner`;
    case 'EROFS':
      return `${dir} is on a read-only file system: choose a writable cert_dir`;
    case 'ENOSPC':
    case 'EDQUOT':
      return `the file system of ${dir} is full: free some space`;
    case 'EISDIR':
      return 'a directory has that name: remove it or choose another file name';
    default:
      return 'see the cause';
  }
}

/**
 * Replaces `path` with `data`, mode `mode`: a temporary file in the same directory is written,
 * fsync'ed, given the mode, renamed over `path`, and the directory fsync'ed so the rename survives
 * a crash. On failure nothing is left behind (the old file, if any, is untouched) and the error is
 * ERR_HELPER_WRITE naming the file, what failed and what to do.
 */
export function writeFileAtomic(path: string, data: string | Uint8Array, mode: number): void {
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  let fd: number | undefined;
  let step = 'create a temporary file in';
  try {
    fd = openSync(tmp, 'wx', 0o600);
    step = 'write';
    const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    step = 'fsync';
    fsyncSync(fd);
    // The mode is set on the file itself, so the process umask cannot narrow or widen it.
    step = 'chmod';
    fchmodSync(fd, mode);
    closeSync(fd);
    fd = undefined;
    step = 'rename the new file over';
    renameSync(tmp, path);
  } catch (err) {
    if (fd !== undefined) closeSync(fd);
    rmSync(tmp, { force: true });
    const code = (err as NodeJS.ErrnoException).code;
    throw new TesseraError(
      TesseraErrorCode.HELPER_WRITE,
      `helper: cannot ${step} ${step.startsWith('create') ? dir : path}: ${code ?? (err as Error).message}; ${advice(code, dir)}`,
      { cause: err },
    );
  }
  fsyncDir(dir);
}

/** Makes a rename in `dir` durable. Some file systems cannot fsync a directory; that is not an error. */
function fsyncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    // EINVAL/EISDIR on file systems without directory fsync: the rename itself has happened.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** Undefined when `dir` is a directory this process can create files in, else why not (for a startup warning). */
export function checkWritableDir(dir: string): string | undefined {
  try {
    if (!statSync(dir).isDirectory()) return `${dir} is not a directory: point cert_dir at a directory`;
  } catch (err) {
    return advice((err as NodeJS.ErrnoException).code, dir);
  }
  const probe = join(dir, `.tessera-helper-probe.${process.pid}`);
  try {
    closeSync(openSync(probe, 'wx', 0o600));
    rmSync(probe, { force: true });
    return undefined;
  } catch (err) {
    return advice((err as NodeJS.ErrnoException).code, dir);
  }
}

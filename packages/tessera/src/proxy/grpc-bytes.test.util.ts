// A gRPC service definition of raw bytes, for tests that put a gRPC app behind the proxy without a
// protobuf schema: grpc-js carries message bytes as they are (and so does the Go interop client).
import type { MethodDefinition } from '@grpc/grpc-js';

const bytes = (b: Buffer) => b;

/** Method `name` of `/catalogue.Catalogue`, unary or with a streamed answer. */
export function catalogueMethod(name: string, responseStream = false): MethodDefinition<Buffer, Buffer> {
  return {
    path: `/catalogue.Catalogue/${name}`,
    requestStream: false,
    responseStream,
    requestSerialize: bytes,
    requestDeserialize: bytes,
    responseSerialize: bytes,
    responseDeserialize: bytes,
  };
}

// The SpiffeWorkloadAPI service for grpc-js, serialised with the generated protobuf-es schemas.
// Shared by the client, the test server and (later) the agent's server, so the wire form lives here only.
import { create, type DescMessage, fromBinary, type MessageShape, toBinary } from '@bufbuild/protobuf';
import type { MethodDefinition, ServiceDefinition } from '@grpc/grpc-js';
import {
  JWTBundlesRequestSchema,
  JWTBundlesResponseSchema,
  JWTSVIDRequestSchema,
  JWTSVIDResponseSchema,
  ValidateJWTSVIDRequestSchema,
  ValidateJWTSVIDResponseSchema,
  X509BundlesRequestSchema,
  X509BundlesResponseSchema,
  X509SVIDRequestSchema,
  X509SVIDResponseSchema,
} from '../gen/workload/workload_pb.js';

/** gRPC metadata every Workload API request must carry (spec §5.2). */
export const SECURITY_HEADER = 'workload.spiffe.io';

function method<I extends DescMessage, O extends DescMessage>(
  name: string,
  input: I,
  output: O,
  responseStream: boolean,
): MethodDefinition<MessageShape<I>, MessageShape<O>> {
  return {
    path: `/SpiffeWorkloadAPI/${name}`,
    requestStream: false,
    responseStream,
    requestSerialize: (m: MessageShape<I>) => Buffer.from(toBinary(input, m)),
    requestDeserialize: (b: Buffer) => fromBinary(input, b),
    responseSerialize: (m: MessageShape<O>) => Buffer.from(toBinary(output, m)),
    responseDeserialize: (b: Buffer) => fromBinary(output, b),
    originalName: name,
  };
}

export const workloadApiMethods = {
  FetchX509SVID: method('FetchX509SVID', X509SVIDRequestSchema, X509SVIDResponseSchema, true),
  FetchX509Bundles: method('FetchX509Bundles', X509BundlesRequestSchema, X509BundlesResponseSchema, true),
  FetchJWTSVID: method('FetchJWTSVID', JWTSVIDRequestSchema, JWTSVIDResponseSchema, false),
  FetchJWTBundles: method('FetchJWTBundles', JWTBundlesRequestSchema, JWTBundlesResponseSchema, true),
  ValidateJWTSVID: method(
    'ValidateJWTSVID',
    ValidateJWTSVIDRequestSchema,
    ValidateJWTSVIDResponseSchema,
    false,
  ),
} as const;

/** The service definition to register on a grpc-js Server. */
export const workloadApiService: ServiceDefinition = workloadApiMethods as unknown as ServiceDefinition;

export { create };

// `spiffe/wire`: the Workload API on the wire, for implementing a Workload API server (an agent):
// the grpc-js service definition, the mandatory security header, and the generated message schemas.
export * from './gen/workload/workload_pb.js';
export { SECURITY_HEADER, workloadApiMethods, workloadApiService } from './workloadapi/service.js';

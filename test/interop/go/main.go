// Command interop drives go-spiffe v2 as a reference peer for Tessera's interop suite.
//
//	interop verdicts <vectors.json>
//	interop tls-server --cert F --key F --bundle td=F[,td=F] (--authorize-id ID | --authorize-member-of TD) [--addr 127.0.0.1:0]
//	interop tls-client --cert F --key F --bundle td=F[,td=F] (--authorize-id ID | --authorize-member-of TD) --addr host:port [--message hi]
//	interop workload [--audience aud]... [--updates N] [--timeout 60s]   (a workload on $SPIFFE_ENDPOINT_SOCKET)
//	interop mtls-pair [--server-hint h] [--client-hint h] [--timeout 30s] (an mTLS pair on $SPIFFE_ENDPOINT_SOCKET)
//	interop sds [--socket P] --names a,b [--events N] [--nack N] [--then-names N=a,b] [--reconnect-after N]
//	            [--handshake-with addr | --listen addr] [--linger D] [--timeout D] [--fetch | --delta]
//	            (an Envoy SDS v3 client, go-control-plane types; see sds.go)
//	interop envoy-validate <bootstrap.yaml>   (an Envoy bootstrap against the Envoy v3 API protos; envoy_validate.go)
//	interop x509-server (--authorize-id ID | --authorize-member-of TD) [--addr 127.0.0.1:0] [--socket P] [--timeout 30s]
//	interop x509-client (--authorize-id ID | --authorize-member-of TD) --addr host:port [--message hi] [--socket P] [--timeout 30s]
//	interop x509-bundles [--wait-td TD [--wait-roots N] [--wait-exact]] [--socket P] [--timeout 30s]
//	            (mTLS server / client, bundle watcher, all on a Workload API: --socket or $SPIFFE_ENDPOINT_SOCKET; x509_workload.go)
//	interop grpc-client --cert F --key F --bundle td=F (--authorize-id ID | --authorize-member-of TD) --addr host:port
//	                    --method /pkg.Service/Method [--message body]   (a grpc-go client; grpc.go)
//	interop oidc-verify --issuer URL --audience A --token T [--ca file]   (coreos/go-oidc v3 discovers the
//	            issuer and verifies a JWT-SVID as a relying party; oidc.go)
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

func usage() {
	fmt.Fprintln(os.Stderr, "usage: interop verdicts <vectors.json> | tls-server ... | tls-client ... | workload ... | mtls-pair ... | sds ... | x509-server ... | x509-client ... | x509-bundles ... | oidc-verify ...")
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "verdicts":
		if len(os.Args) != 3 {
			usage()
		}
		err = runVerdicts(os.Args[2])
	case "tls-server":
		err = runTLSServer(os.Args[2:])
	case "tls-client":
		err = runTLSClient(os.Args[2:])
	case "workload":
		err = runWorkload(os.Args[2:])
	case "mtls-pair":
		err = runMTLSPair(os.Args[2:])
	case "sds":
		err = runSDS(os.Args[2:])
	case "envoy-validate":
		err = runEnvoyValidate(os.Args[2:])
	case "grpc-client":
		err = runGRPCClient(os.Args[2:])
	case "x509-server":
		err = runX509Server(os.Args[2:])
	case "x509-client":
		err = runX509Client(os.Args[2:])
	case "x509-bundles":
		err = runX509Bundles(os.Args[2:])
	case "oidc-verify":
		err = runOIDCVerify(os.Args[2:])
	default:
		usage()
	}
	var ce connError
	if errors.As(err, &ce) {
		fmt.Printf("ERROR %s\n", strings.ReplaceAll(ce.Error(), "\n", " "))
		os.Exit(1)
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(os.Stderr, "interop:", ue.error)
		os.Exit(2)
	}
	if errors.Is(err, errSilent) {
		os.Exit(1) // already reported as a JSON line
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "interop:", err)
		os.Exit(1)
	}
}

package main

// interop grpc-client: a grpc-go client with go-spiffe mTLS credentials, for calls through tessera's
// inbound proxy to a gRPC app. The interop service has no protobuf schema: message bytes are sent
// and printed as they are.
//
//	interop grpc-client --cert F --key F --bundle td=F (--authorize-id ID | --authorize-member-of TD)
//	                    --addr host:port --method /pkg.Service/Method [--message body]
//
// Prints "OK <response>" or "STATUS <code name> <message>" (exit 0 either way: both are answers);
// "ERROR <msg>" (exit 1) when no answer came.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// rawCodec passes message bytes through unchanged. Its name keeps the content-type application/grpc.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func runGRPCClient(args []string) error {
	// --method is ours; the rest are the tls-client flags.
	method := ""
	rest := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		if args[i] == "--method" && i+1 < len(args) {
			method = args[i+1]
			i++
			continue
		}
		rest = append(rest, args[i])
	}
	if method == "" {
		return usageError{errors.New("grpc-client: --method /pkg.Service/Method is required")}
	}
	f, err := parseTLSFlags("grpc-client", rest, true)
	if err != nil {
		return usageError{err}
	}
	svid, set, authorizer, err := f.material()
	if err != nil {
		return usageError{err}
	}
	creds := credentials.NewTLS(tlsconfig.MTLSClientConfig(svid, set, authorizer))
	conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return connError{err}
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := []byte(f.message)
	var resp []byte
	if err := conn.Invoke(ctx, method, &req, &resp, grpc.ForceCodec(rawCodec{})); err != nil {
		s, ok := status.FromError(err)
		if !ok {
			return connError{err}
		}
		fmt.Printf("STATUS %s %s\n", s.Code(), s.Message())
		return nil
	}
	fmt.Printf("OK %s\n", resp)
	return nil
}

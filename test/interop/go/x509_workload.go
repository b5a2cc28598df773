package main

// The go-spiffe peer as an mTLS server, an mTLS client and a bundle watcher whose identity and trust
// come from a Workload API (a SPIRE agent's, Tessera's): everything through workloadapi.X509Source /
// Client, as an application built on go-spiffe does, so rotated SVIDs and federated bundles are
// picked up as they arrive. The socket is --socket PATH, else $SPIFFE_ENDPOINT_SOCKET.
//
//	interop x509-server (--authorize-id ID | --authorize-member-of TD) [--addr 127.0.0.1:0] [--socket P] [--timeout 30s]
//	  stdout: "LISTEN host:port" once listening, then serves until killed;
//	  stderr, per connection (as tls-server): "ACCEPTED <addr> (<peer id>)" | "REFUSED <addr>: <error>";
//	  echoes "<peer id> <line>" back.
//	interop x509-client (--authorize-id ID | --authorize-member-of TD) --addr host:port [--message hi] [--socket P] [--timeout 30s]
//	  stdout: "OK <server id> <echoed line>", exit 0; a refused or failed exchange: "ERROR <msg>", exit 1.
//	interop x509-bundles [--wait-td TD [--wait-roots N] [--wait-exact]] [--socket P] [--timeout 30s]
//	  stdout: "BUNDLE <td> <roots> <sha256,sha256,...>" per trust domain of the X.509 context (sorted
//	  by name; fingerprints lower-case hex of the DER, in the bundle's order), then "SVID <id>" per
//	  SVID. Without --wait-td: the first context. With it: watches until TD's bundle has at least N
//	  roots (exactly N with --wait-exact; N = 0: the bundle is present), then prints that context;
//	  exit 1 at the timeout, the last context seen on stderr.
//
// --timeout bounds the wait for the first X.509 context (x509-bundles: for the awaited one); the
// connection itself has 10 s, as in tls-server / tls-client.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

type workloadTLSFlags struct {
	socket, authorizeID, authorizeMemberOf, addr, message string
	timeout                                               time.Duration
}

func parseWorkloadTLSFlags(name string, args []string, client bool) (*workloadTLSFlags, error) {
	f := &workloadTLSFlags{}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&f.socket, "socket", "", "Workload API socket path (default $SPIFFE_ENDPOINT_SOCKET)")
	fs.StringVar(&f.authorizeID, "authorize-id", "", "authorize exactly this peer SPIFFE ID")
	fs.StringVar(&f.authorizeMemberOf, "authorize-member-of", "", "authorize any peer in this trust domain")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "give up after this long")
	defAddr := "127.0.0.1:0"
	if client {
		defAddr = ""
		fs.StringVar(&f.message, "message", "hi", "line to send")
	}
	fs.StringVar(&f.addr, "addr", defAddr, "listen (server) or dial (client) address")
	if err := fs.Parse(args); err != nil {
		return nil, usageError{err}
	}
	if f.addr == "" {
		return nil, usageError{errors.New(name + ": --addr is required")}
	}
	return f, nil
}

// sourceOptions points a source at --socket when given; workloadapi reads $SPIFFE_ENDPOINT_SOCKET otherwise.
func sourceOptions(socket string) []workloadapi.ClientOption {
	if socket == "" {
		return nil
	}
	if !strings.HasPrefix(socket, "unix:") {
		socket = "unix://" + socket
	}
	return []workloadapi.ClientOption{workloadapi.WithAddr(socket)}
}

func newX509Source(ctx context.Context, name, socket string) (*workloadapi.X509Source, error) {
	source, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(sourceOptions(socket)...))
	if err != nil {
		return nil, fmt.Errorf("%s: X509Source: %w", name, err)
	}
	return source, nil
}

func runX509Server(args []string) error {
	f, err := parseWorkloadTLSFlags("x509-server", args, false)
	if err != nil {
		return err
	}
	authorizer, err := authorizerOf(f.authorizeID, f.authorizeMemberOf)
	if err != nil {
		return usageError{fmt.Errorf("x509-server: %w", err)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	source, err := newX509Source(ctx, "x509-server", f.socket) // ctx bounds only the first update
	if err != nil {
		return err
	}
	defer source.Close()
	ln, err := tls.Listen("tcp", f.addr, tlsconfig.MTLSServerConfig(source, source, authorizer))
	if err != nil {
		return err
	}
	fmt.Printf("LISTEN %s\n", ln.Addr())
	os.Stdout.Sync()
	for {
		conn, err := ln.Accept()
		if err != nil {
			return err
		}
		go serve(conn.(*tls.Conn)) // tls.go: ACCEPTED / REFUSED on stderr, echo
	}
}

func runX509Client(args []string) error {
	f, err := parseWorkloadTLSFlags("x509-client", args, true)
	if err != nil {
		return err
	}
	authorizer, err := authorizerOf(f.authorizeID, f.authorizeMemberOf)
	if err != nil {
		return usageError{fmt.Errorf("x509-client: %w", err)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	source, err := newX509Source(ctx, "x509-client", f.socket)
	if err != nil {
		return err
	}
	defer source.Close()
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	conn, err := tls.DialWithDialer(dialer, "tcp", f.addr, tlsconfig.MTLSClientConfig(source, source, authorizer))
	if err != nil {
		return connError{err}
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	server, err := peerID(conn)
	if err != nil {
		return connError{err}
	}
	if _, err := fmt.Fprintf(conn, "%s\n", f.message); err != nil {
		return connError{err}
	}
	// TLS 1.3: the server's verdict on our certificate arrives after our handshake completed, so
	// a refusal shows up here, as an alert on read.
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return connError{err}
	}
	fmt.Printf("OK %s %s\n", server, strings.TrimRight(line, "\r\n"))
	return nil
}

// describeContext is the x509-bundles output for one X.509 context.
func describeContext(c *workloadapi.X509Context) string {
	var b strings.Builder
	bundles := c.Bundles.Bundles()
	sort.Slice(bundles, func(i, j int) bool { return bundles[i].TrustDomain().Name() < bundles[j].TrustDomain().Name() })
	for _, bundle := range bundles {
		roots := bundle.X509Authorities()
		fps := make([]string, len(roots))
		for i, root := range roots {
			sum := sha256.Sum256(root.Raw)
			fps[i] = hex.EncodeToString(sum[:])
		}
		fmt.Fprintf(&b, "BUNDLE %s %d %s\n", bundle.TrustDomain().Name(), len(roots), strings.Join(fps, ","))
	}
	for _, svid := range c.SVIDs {
		fmt.Fprintf(&b, "SVID %s\n", svid.ID)
	}
	return b.String()
}

// contextWatcher hands the newest X.509 context to the main loop (older ones are dropped) and keeps
// the last watch error, for the timeout message.
type contextWatcher struct {
	updates chan *workloadapi.X509Context
	lastErr chan error
}

func replaceLatest[T any](ch chan T, v T) {
	for {
		select {
		case ch <- v:
			return
		default:
			select {
			case <-ch:
			default:
			}
		}
	}
}

func (w *contextWatcher) OnX509ContextUpdate(c *workloadapi.X509Context) { replaceLatest(w.updates, c) }
func (w *contextWatcher) OnX509ContextWatchError(err error)              { replaceLatest(w.lastErr, err) }

func runX509Bundles(args []string) error {
	fs := flag.NewFlagSet("x509-bundles", flag.ContinueOnError)
	socket := fs.String("socket", "", "Workload API socket path (default $SPIFFE_ENDPOINT_SOCKET)")
	waitTD := fs.String("wait-td", "", "watch until this trust domain's bundle has --wait-roots roots")
	waitRoots := fs.Int("wait-roots", 0, "with --wait-td: at least this many roots (0: the bundle is present)")
	exact := fs.Bool("wait-exact", false, "with --wait-td: exactly --wait-roots roots")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if *waitTD == "" && (*waitRoots != 0 || *exact) {
		return usageError{errors.New("x509-bundles: --wait-roots and --wait-exact need --wait-td")}
	}
	var td spiffeid.TrustDomain
	if *waitTD != "" {
		var err error
		if td, err = spiffeid.TrustDomainFromString(*waitTD); err != nil {
			return usageError{fmt.Errorf("x509-bundles: --wait-td: %w", err)}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	client, err := workloadapi.New(ctx, sourceOptions(*socket)...)
	if err != nil {
		return fmt.Errorf("x509-bundles: %w", err)
	}
	defer client.Close()
	defer cancel() // runs before client.Close: the watch ends first
	w := &contextWatcher{updates: make(chan *workloadapi.X509Context, 1), lastErr: make(chan error, 1)}
	go func() { _ = client.WatchX509Context(ctx, w) }()

	done := func(c *workloadapi.X509Context) bool {
		if td.IsZero() {
			return true
		}
		b, ok := c.Bundles.Get(td)
		if !ok {
			return false
		}
		n := len(b.X509Authorities())
		if *exact {
			return n == *waitRoots
		}
		return n >= *waitRoots
	}
	var last *workloadapi.X509Context
	for {
		select {
		case c := <-w.updates:
			last = c
			if done(c) {
				fmt.Print(describeContext(c))
				return nil
			}
		case <-ctx.Done():
			want := "X.509 context"
			if !td.IsZero() {
				cmp := "at least"
				if *exact {
					cmp = "exactly"
				}
				want = fmt.Sprintf("bundle of %s with %s %d roots", td, cmp, *waitRoots)
			}
			seen := "no X.509 context"
			if last != nil {
				seen = "last context:\n" + describeContext(last)
			}
			select {
			case err := <-w.lastErr:
				seen += fmt.Sprintf("\nlast watch error: %v", err)
			default:
			}
			return fmt.Errorf("x509-bundles: no %s within %s; %s", want, *timeout, strings.TrimRight(seen, "\n"))
		}
	}
}

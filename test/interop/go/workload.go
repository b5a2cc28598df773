package main

// The go-spiffe peer as a WORKLOAD: it talks to the Workload API socket named by
// SPIFFE_ENDPOINT_SOCKET exactly as an application built on go-spiffe would, and prints what it saw
// as JSON lines on stdout (see test/interop/workload-peers.ts for the shapes).
//
//	interop workload [--audience aud]... [--updates N] [--timeout 60s]
//	interop mtls-pair [--server-hint h] [--client-hint h] [--timeout 30s]

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/status"
)

var stdoutMu sync.Mutex

// emit prints one JSON object on its own line; lines from several goroutines never interleave.
func emit(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	stdoutMu.Lock()
	defer stdoutMu.Unlock()
	os.Stdout.Write(append(b, '\n'))
}

// serialHex is the serial as node's X509Certificate.serialNumber prints it: upper-case hex, whole bytes.
func serialHex(cert *x509.Certificate) string {
	return strings.ToUpper(hex.EncodeToString(cert.SerialNumber.Bytes()))
}

type svidSeen struct {
	SpiffeID  string `json:"spiffe_id"`
	Hint      string `json:"hint"`
	Serial    string `json:"serial"`
	ExpiresAt int64  `json:"expires_at"`
}

func seen(s *x509svid.SVID) svidSeen {
	leaf := s.Certificates[0]
	return svidSeen{SpiffeID: s.ID.String(), Hint: s.Hint, Serial: serialHex(leaf), ExpiresAt: leaf.NotAfter.Unix()}
}

type sourceSeen struct {
	SpiffeID string `json:"spiffe_id"`
	Serial   string `json:"serial"`
}

type x509Line struct {
	Kind    string         `json:"kind"` // "x509"
	Update  int            `json:"update"`
	SVIDs   []svidSeen     `json:"svids"`
	Bundles map[string]int `json:"bundles"` // trust domain -> number of X.509 authorities
	// What the X509Source (the thing TLS configs use) serves once it has caught up with this update.
	Source *sourceSeen `json:"source,omitempty"`
}

type errorLine struct {
	Kind  string `json:"kind"` // "error"
	Where string `json:"where"`
	Code  string `json:"code,omitempty"` // gRPC code name (PermissionDenied, Unavailable, ...)
	Error string `json:"error"`
}

func errLine(where string, err error) errorLine {
	l := errorLine{Kind: "error", Where: where, Error: err.Error()}
	if s, ok := status.FromError(err); ok { // FromError finds a status wrapped anywhere in err
		l.Code = s.Code().String()
	}
	return l
}

// watcher is a workloadapi.X509ContextWatcher that queues every update for the main loop and
// reports every watch error as it happens.
type watcher struct {
	ctx     context.Context
	updates chan *workloadapi.X509Context
}

func (w *watcher) OnX509ContextUpdate(c *workloadapi.X509Context) { w.updates <- c }

func (w *watcher) OnX509ContextWatchError(err error) {
	if w.ctx.Err() == nil {
		emit(errLine("watch", err))
	}
}

type audiences []string

func (a *audiences) String() string     { return strings.Join(*a, ",") }
func (a *audiences) Set(v string) error { *a = append(*a, v); return nil }

func runWorkload(args []string) error {
	fs := flag.NewFlagSet("workload", flag.ContinueOnError)
	var aud audiences
	fs.Var(&aud, "audience", "JWT-SVID audience (repeatable); none: no JWT-SVID is fetched")
	updates := fs.Int("updates", 1, "exit after this many X.509 updates")
	timeout := fs.Duration("timeout", 60*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *updates < 1 {
		return errors.New("workload: --updates must be at least 1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	// One client (address from SPIFFE_ENDPOINT_SOCKET), shared by the sources and the watch.
	client, err := workloadapi.New(ctx)
	if err != nil {
		return fmt.Errorf("workload: %w", err)
	}
	defer client.Close()
	// Deferred calls run last first: the watch's context ends before the client closes, so closing
	// is not reported as a watch error ("the client connection is closing").
	defer cancel()

	// The watch starts first so that errors while the sources wait (PermissionDenied, ...) are seen.
	w := &watcher{ctx: ctx, updates: make(chan *workloadapi.X509Context, 64)}
	go func() { _ = client.WatchX509Context(ctx, w) }()

	x509Source, err := workloadapi.NewX509Source(ctx, workloadapi.WithClient(client))
	if err != nil {
		return fmt.Errorf("workload: X509Source: %w", err)
	}
	defer x509Source.Close()
	bundleSource, err := workloadapi.NewBundleSource(ctx, workloadapi.WithClient(client))
	if err != nil {
		return fmt.Errorf("workload: BundleSource: %w", err)
	}
	defer bundleSource.Close()
	var jwtSource *workloadapi.JWTSource
	if len(aud) > 0 {
		if jwtSource, err = workloadapi.NewJWTSource(ctx, workloadapi.WithClient(client)); err != nil {
			return fmt.Errorf("workload: JWTSource: %w", err)
		}
		defer jwtSource.Close()
	}

	for n := 1; n <= *updates; n++ {
		var c *workloadapi.X509Context
		select {
		case c = <-w.updates:
		case <-ctx.Done():
			return fmt.Errorf("workload: saw %d of %d X.509 updates before the timeout", n-1, *updates)
		}
		line := x509Line{Kind: "x509", Update: n, Bundles: map[string]int{}}
		for _, s := range c.SVIDs {
			line.SVIDs = append(line.SVIDs, seen(s))
		}
		for _, b := range c.Bundles.Bundles() {
			line.Bundles[b.TrustDomain().Name()] = len(b.X509Authorities())
		}
		line.Source = catchUp(ctx, x509Source, line.SVIDs[0].Serial)
		if n == 1 {
			// Before update 1 is printed: a test may change what is served as soon as it sees it.
			reportSources(ctx, client, bundleSource, jwtSource, c, aud)
		}
		emit(line)
	}
	return nil
}

// catchUp waits (up to 2 s) for the X509Source, which has its own stream, to serve the SVID with
// `serial`, and returns what it serves then.
func catchUp(ctx context.Context, source *workloadapi.X509Source, serial string) *sourceSeen {
	deadline := time.Now().Add(2 * time.Second)
	for {
		svid, err := source.GetX509SVID()
		if err != nil {
			return &sourceSeen{SpiffeID: "error: " + err.Error()}
		}
		got := &sourceSeen{SpiffeID: svid.ID.String(), Serial: serialHex(svid.Certificates[0])}
		if got.Serial == serial || time.Now().After(deadline) || ctx.Err() != nil {
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type jwtLine struct {
	Kind      string   `json:"kind"` // "jwt"
	SpiffeID  string   `json:"spiffe_id"`
	Hint      string   `json:"hint"`
	Audience  []string `json:"audience"`
	ExpiresAt int64    `json:"expires_at"`
}

type sourcesLine struct {
	Kind string `json:"kind"` // "bundles"
	// BundleSource's X.509 and JWT authorities per trust domain (-1: the source has no bundle for it).
	X509 map[string]int `json:"x509"`
	JWT  map[string]int `json:"jwt"`
	// JWTSource's JWT authorities per trust domain, when an audience was given.
	JWTSource map[string]int `json:"jwt_source,omitempty"`
}

// reportSources prints what BundleSource and JWTSource hold for every trust domain the Workload API
// named (in the X.509 context and in FetchJWTBundles), and the JWT-SVID fetched through JWTSource.
func reportSources(ctx context.Context, client *workloadapi.Client, bundles *workloadapi.BundleSource,
	jwtSource *workloadapi.JWTSource, c *workloadapi.X509Context, aud []string) {
	names := map[string]spiffeid.TrustDomain{}
	for _, b := range c.Bundles.Bundles() {
		names[b.TrustDomain().Name()] = b.TrustDomain()
	}
	if set, err := client.FetchJWTBundles(ctx); err != nil {
		emit(errLine("FetchJWTBundles", err))
	} else {
		for _, b := range set.Bundles() {
			names[b.TrustDomain().Name()] = b.TrustDomain()
		}
	}
	keys := make([]string, 0, len(names))
	for k := range names {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	line := sourcesLine{Kind: "bundles", X509: map[string]int{}, JWT: map[string]int{}}
	if jwtSource != nil {
		line.JWTSource = map[string]int{}
	}
	for _, k := range keys {
		td := names[k]
		line.X509[k], line.JWT[k] = -1, -1
		if b, err := bundles.GetX509BundleForTrustDomain(td); err == nil {
			line.X509[k] = len(b.X509Authorities())
		}
		if b, err := bundles.GetJWTBundleForTrustDomain(td); err == nil {
			line.JWT[k] = len(b.JWTAuthorities())
		}
		if jwtSource != nil {
			line.JWTSource[k] = -1
			if b, err := jwtSource.GetJWTBundleForTrustDomain(td); err == nil {
				line.JWTSource[k] = len(b.JWTAuthorities())
			}
		}
	}
	emit(line)
	if jwtSource == nil {
		return
	}
	params := jwtsvid.Params{Audience: aud[0], ExtraAudiences: aud[1:]}
	svid, err := jwtSource.FetchJWTSVID(ctx, params)
	if err != nil {
		emit(errLine("FetchJWTSVID", err))
		return
	}
	emit(jwtLine{Kind: "jwt", SpiffeID: svid.ID.String(), Hint: svid.Hint, Audience: svid.Audience, ExpiresAt: svid.Expiry.Unix()})
}

type sideLine struct {
	Self  string `json:"self"`
	Peer  string `json:"peer,omitempty"`
	Error string `json:"error,omitempty"`
}

type mtlsLine struct {
	Kind   string   `json:"kind"` // "mtls"
	OK     bool     `json:"ok"`
	Server sideLine `json:"server"`
	Client sideLine `json:"client"`
	// The line the client got back: "<the client's ID as the server saw it> hello".
	Reply string `json:"reply,omitempty"`
}

func pickByHint(hint string) func([]*x509svid.SVID) *x509svid.SVID {
	return func(svids []*x509svid.SVID) *x509svid.SVID {
		for _, s := range svids {
			if s.Hint == hint {
				return s
			}
		}
		return svids[0]
	}
}

func peerID(conn *tls.Conn) (string, error) {
	peers := conn.ConnectionState().PeerCertificates
	if len(peers) == 0 {
		return "", errors.New("no peer certificate")
	}
	id, err := x509svid.IDFromCert(peers[0])
	if err != nil {
		return "", err
	}
	return id.String(), nil
}

// runMTLSPair runs a go-spiffe mTLS server and client in one process, each on its own X509Source
// from the Workload API, each authorizing any ID of its own trust domain, and reports the peer IDs.
func runMTLSPair(args []string) error {
	fs := flag.NewFlagSet("mtls-pair", flag.ContinueOnError)
	serverHint := fs.String("server-hint", "", "the server uses the SVID with this hint (default: the first)")
	clientHint := fs.String("client-hint", "", "the client uses the SVID with this hint (default: the first)")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	source := func(hint string) (*workloadapi.X509Source, error) {
		if hint == "" {
			return workloadapi.NewX509Source(ctx)
		}
		return workloadapi.NewX509Source(ctx, workloadapi.WithDefaultX509SVIDPicker(pickByHint(hint)))
	}
	serverSource, err := source(*serverHint)
	if err != nil {
		return fmt.Errorf("mtls-pair: server X509Source: %w", err)
	}
	defer serverSource.Close()
	clientSource, err := source(*clientHint)
	if err != nil {
		return fmt.Errorf("mtls-pair: client X509Source: %w", err)
	}
	defer clientSource.Close()
	self := func(s *workloadapi.X509Source) (spiffeid.ID, error) {
		svid, err := s.GetX509SVID()
		if err != nil {
			return spiffeid.ID{}, err
		}
		return svid.ID, nil
	}
	serverID, err := self(serverSource)
	if err != nil {
		return err
	}
	clientID, err := self(clientSource)
	if err != nil {
		return err
	}
	out := mtlsLine{Kind: "mtls", Server: sideLine{Self: serverID.String()}, Client: sideLine{Self: clientID.String()}}

	ln, err := tls.Listen("tcp", "127.0.0.1:0",
		tlsconfig.MTLSServerConfig(serverSource, serverSource, tlsconfig.AuthorizeMemberOf(serverID.TrustDomain())))
	if err != nil {
		return err
	}
	defer ln.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // the server: accept one connection, echo "<peer id> <line>"
		defer wg.Done()
		conn, err := ln.Accept()
		if err != nil {
			out.Server.Error = err.Error()
			return
		}
		tc := conn.(*tls.Conn)
		defer tc.Close()
		_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			out.Server.Error = err.Error()
			return
		}
		if out.Server.Peer, err = peerID(tc); err != nil {
			out.Server.Error = err.Error()
			return
		}
		line, err := bufio.NewReader(tc).ReadString('\n')
		if err != nil {
			out.Server.Error = err.Error()
			return
		}
		_, _ = fmt.Fprintf(tc, "%s %s", out.Server.Peer, line)
	}()
	go func() { // the client
		defer wg.Done()
		dialer := &net.Dialer{Timeout: 10 * time.Second}
		conn, err := tls.DialWithDialer(dialer, "tcp", ln.Addr().String(),
			tlsconfig.MTLSClientConfig(clientSource, clientSource, tlsconfig.AuthorizeMemberOf(clientID.TrustDomain())))
		if err != nil {
			out.Client.Error = err.Error()
			ln.Close() // the server would otherwise wait in Accept
			return
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if out.Client.Peer, err = peerID(conn); err != nil {
			out.Client.Error = err.Error()
			return
		}
		if _, err := fmt.Fprintf(conn, "hello\n"); err != nil {
			out.Client.Error = err.Error()
			return
		}
		reply, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			out.Client.Error = err.Error()
			return
		}
		out.Reply = strings.TrimRight(reply, "\n")
	}()
	wg.Wait()
	out.OK = out.Server.Error == "" && out.Client.Error == "" && out.Server.Peer != "" && out.Client.Peer != ""
	emit(out)
	if !out.OK {
		os.Exit(1)
	}
	return nil
}

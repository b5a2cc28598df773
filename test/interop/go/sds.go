package main

// The Envoy SDS v3 client: go-control-plane's official Go types, behaving as Envoy's secret
// subscriptions do (state of the world on StreamSecrets), printing what it received as JSON lines.
//
//	interop sds [--socket PATH] --names a,b [--events N] [--linger D] [--timeout D]
//	            [--nack N[,N]] [--then-names N=a,b]... [--reconnect-after N[,N]]
//	            [--handshake-with host:port] [--listen 127.0.0.1:0] [--fetch] [--delta]
//
// Every response is checked as Envoy checks it (the type URL, protoc-gen-validate rules, each
// resource unpacked as a Secret, PEMs parsed, the key matched to the certificate) and ACKed, or
// NACKed with the problem; --nack N NACKs response N whatever it holds. See test/interop/README.md
// for the lines and exit codes.

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
)

const (
	secretTypeURL    = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
	spiffeValidator  = "envoy.tls.cert_validator.spiffe"
	spiffeConfigType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig"
)

// secretSeen is one Secret of a response as the client understood it.
type secretSeen struct {
	Name string `json:"name"`
	// tls_certificate | validation_context | spiffe_validator | invalid
	Kind string `json:"kind"`
	// tls_certificate: the leaf's ID and serial, its notAfter (Unix s), the chain length.
	SpiffeID  string `json:"spiffe_id,omitempty"`
	Serial    string `json:"serial,omitempty"`
	ExpiresAt int64  `json:"expires_at,omitempty"`
	Chain     int    `json:"chain,omitempty"`
	// tls_certificate: the private key's PEM block type (PKCS#8 is "PRIVATE KEY").
	KeyPEM string `json:"key_pem,omitempty"`
	// validation_context: the number of CA certificates and the trust domains their URI SANs name.
	Authorities  int            `json:"authorities,omitempty"`
	CATrustNames []string       `json:"ca_trust_domains,omitempty"`
	TrustDomains map[string]int `json:"trust_domains,omitempty"` // spiffe_validator: td -> authorities
	// Why Envoy would refuse this secret (the response is then NACKed).
	Error string `json:"error,omitempty"`
}

type responseLine struct {
	Kind        string       `json:"kind"` // "response"
	N           int          `json:"n"`    // 1, 2, … over all streams
	Stream      int          `json:"stream"`
	At          int64        `json:"at_ms"` // since the program started
	VersionInfo string       `json:"version_info"`
	Nonce       string       `json:"nonce"`
	TypeURL     string       `json:"type_url"`
	Names       []string     `json:"names"` // the secrets' names, in order
	Secrets     []secretSeen `json:"secrets"`
	// "ACK" or "NACK"; Reason says why a NACK was sent.
	Verdict string `json:"verdict"`
	Reason  string `json:"reason,omitempty"`
}

type requestLine struct {
	Kind          string   `json:"kind"` // "request"
	Stream        int      `json:"stream"`
	At            int64    `json:"at_ms"`
	VersionInfo   string   `json:"version_info"`
	ResponseNonce string   `json:"response_nonce"`
	Names         []string `json:"names"`
	ErrorDetail   string   `json:"error_detail,omitempty"`
}

type streamLine struct {
	Kind   string `json:"kind"` // "stream": a new stream was opened (1 at start, then at each reconnect)
	Stream int    `json:"stream"`
	At     int64  `json:"at_ms"`
}

type handshakeLine struct {
	Kind string `json:"kind"` // "handshake"
	With string `json:"with"`
	OK   bool   `json:"ok"`
	// What the client presented and which validation it used (validation_context | spiffe_validator).
	Self       string `json:"self,omitempty"`
	Validation string `json:"validation,omitempty"`
	Peer       string `json:"peer,omitempty"`
	Reply      string `json:"reply,omitempty"`
	Error      string `json:"error,omitempty"`
}

type listenLine struct {
	Kind string `json:"kind"` // "listen"
	Addr string `json:"addr"`
	Self string `json:"self"`
}

type connLine struct {
	Kind  string `json:"kind"` // "accepted" | "refused"
	Peer  string `json:"peer,omitempty"`
	Self  string `json:"self,omitempty"`
	Error string `json:"error,omitempty"`
}

var started = time.Now()

func sinceStart() int64 { return time.Since(started).Milliseconds() }

type intSet map[int]bool

func (s intSet) String() string { return fmt.Sprint(map[int]bool(s)) }
func (s intSet) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 1 {
			return fmt.Errorf("%q is not a response number (1, 2, …)", p)
		}
		s[n] = true
	}
	return nil
}

type namesAfter map[int][]string

func (m namesAfter) String() string { return fmt.Sprint(map[int][]string(m)) }
func (m namesAfter) Set(v string) error {
	k, names, ok := strings.Cut(v, "=")
	n, err := strconv.Atoi(k)
	if !ok || err != nil || n < 1 {
		return fmt.Errorf("%q is not N=name,name (N a response number)", v)
	}
	m[n] = splitNames(names)
	return nil
}

func splitNames(s string) []string {
	out := []string{}
	for _, n := range strings.Split(s, ",") {
		if n = strings.TrimSpace(n); n != "" {
			out = append(out, n)
		}
	}
	return out
}

type sdsOptions struct {
	socket         string
	names          []string
	events         int
	linger         time.Duration
	timeout        time.Duration
	nack           intSet
	thenNames      namesAfter
	reconnectAfter intSet
	handshakeWith  string
	listen         string
	fetch          bool
	delta          bool
}

func parseSDSFlags(args []string) (*sdsOptions, error) {
	o := &sdsOptions{nack: intSet{}, thenNames: namesAfter{}, reconnectAfter: intSet{}}
	fs := flag.NewFlagSet("sds", flag.ContinueOnError)
	fs.StringVar(&o.socket, "socket", "", "the SDS server's Unix socket (default: $SPIFFE_ENDPOINT_SOCKET)")
	names := fs.String("names", "default,ROOTCA", "resource names to subscribe to, comma-separated")
	fs.IntVar(&o.events, "events", 1, "exit 0 after this many responses (over all streams)")
	fs.DurationVar(&o.linger, "linger", 0, "after the last awaited response, go on receiving (and printing) for this long")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "give up (exit 1) after this long")
	fs.Var(o.nack, "nack", "NACK these responses (N[,N…]) instead of ACKing them")
	fs.Var(o.thenNames, "then-names", "N=a,b: after response N, subscribe to these names instead (repeatable)")
	fs.Var(o.reconnectAfter, "reconnect-after", "after response N[,N…] close the stream and connection and open new ones")
	fs.StringVar(&o.handshakeWith, "handshake-with", "", "host:port: once a certificate and a validation secret are in, make an mTLS handshake with this peer")
	fs.StringVar(&o.listen, "listen", "", "host:port: once a certificate and a validation secret are in, serve mTLS there with the newest secrets until the timeout")
	fs.BoolVar(&o.fetch, "fetch", false, "one FetchSecrets call instead of a stream")
	fs.BoolVar(&o.delta, "delta", false, "open DeltaSecrets and report how it ends")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() != 0 {
		return nil, fmt.Errorf("sds: unexpected argument %q", fs.Arg(0))
	}
	o.names = splitNames(*names)
	if o.socket == "" {
		o.socket = strings.TrimPrefix(os.Getenv("SPIFFE_ENDPOINT_SOCKET"), "unix://")
	}
	if o.socket == "" {
		return nil, errors.New("sds: --socket or SPIFFE_ENDPOINT_SOCKET is required")
	}
	if o.events < 1 {
		return nil, errors.New("sds: --events must be at least 1")
	}
	if o.handshakeWith != "" && o.listen != "" {
		return nil, errors.New("sds: --handshake-with and --listen are exclusive")
	}
	return o, nil
}

// usageError is a bad command line: exit 2.
type usageError struct{ error }

func dialSDS(socket string) (*grpc.ClientConn, error) {
	return grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
}

// Envoy identifies itself in every request; the server need not look at it.
var envoyNode = &corev3.Node{Id: "interop-go", Cluster: "interop"}

func runSDS(args []string) error {
	o, err := parseSDSFlags(args)
	if err != nil {
		return usageError{err}
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	switch {
	case o.fetch:
		return fetchOnce(ctx, o)
	case o.delta:
		return deltaOnce(ctx, o)
	}
	return (&subscription{o: o}).run(ctx)
}

func fetchOnce(ctx context.Context, o *sdsOptions) error {
	conn, err := dialSDS(o.socket)
	if err != nil {
		return err
	}
	defer conn.Close()
	req := &discoveryv3.DiscoveryRequest{Node: envoyNode, ResourceNames: o.names, TypeUrl: secretTypeURL}
	res, err := secretv3.NewSecretDiscoveryServiceClient(conn).FetchSecrets(ctx, req)
	if err != nil {
		emit(errLine("FetchSecrets", err))
		return errSilent
	}
	line, _ := describe(res)
	line.N, line.Stream, line.Verdict = 1, 0, "FETCH"
	emit(line)
	return nil
}

func deltaOnce(ctx context.Context, o *sdsOptions) error {
	conn, err := dialSDS(o.socket)
	if err != nil {
		return err
	}
	defer conn.Close()
	stream, err := secretv3.NewSecretDiscoveryServiceClient(conn).DeltaSecrets(ctx)
	if err == nil {
		err = stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: envoyNode, TypeUrl: secretTypeURL, ResourceNamesSubscribe: o.names})
	}
	if err == nil || errors.Is(err, io.EOF) {
		_, err = stream.Recv()
	}
	if err == nil {
		return errors.New("sds: DeltaSecrets answered with a response")
	}
	emit(errLine("DeltaSecrets", err))
	return errSilent
}

// errSilent: the failure was printed as a line already; exit 1.
var errSilent = errors.New("")

// held is what the client has accepted so far, by name, as Envoy keeps it.
type held struct {
	cert       *tls.Certificate
	self       string
	roots      *x509.CertPool  // validation_context
	spiffe     *x509bundle.Set // spiffe_validator
	validation string
}

type subscription struct {
	o            *sdsOptions
	names        []string
	accepted     string // version_info of the last ACKed response
	n            int
	streamNo     int
	mu           sync.Mutex
	secrets      map[string]*tlsv3.Secret // accepted, by name
	handshakeRan bool
	listening    bool
}

type received struct {
	res *discoveryv3.DiscoveryResponse
	err error
}

func (s *subscription) open(ctx context.Context) (*grpc.ClientConn, secretv3.SecretDiscoveryService_StreamSecretsClient, chan received, error) {
	conn, err := dialSDS(s.o.socket)
	if err != nil {
		return nil, nil, nil, err
	}
	stream, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	if err != nil {
		conn.Close()
		return nil, nil, nil, err
	}
	s.streamNo++
	emit(streamLine{Kind: "stream", Stream: s.streamNo, At: sinceStart()})
	ch := make(chan received, 16)
	go func() {
		for {
			res, err := stream.Recv()
			ch <- received{res, err}
			if err != nil {
				return
			}
		}
	}()
	// The first request of a stream: the names, the last accepted version (empty at first), no nonce.
	if err := s.send(stream, "", nil); err != nil {
		conn.Close()
		return nil, nil, nil, err
	}
	return conn, stream, ch, nil
}

func (s *subscription) send(stream secretv3.SecretDiscoveryService_StreamSecretsClient, nonce string, nack *rpcstatus.Status) error {
	req := &discoveryv3.DiscoveryRequest{
		Node: envoyNode, VersionInfo: s.accepted, ResourceNames: s.names, TypeUrl: secretTypeURL,
		ResponseNonce: nonce, ErrorDetail: nack,
	}
	line := requestLine{Kind: "request", Stream: s.streamNo, At: sinceStart(), VersionInfo: s.accepted, ResponseNonce: nonce, Names: s.names}
	if nack != nil {
		line.ErrorDetail = nack.Message
	}
	emit(line)
	return stream.Send(req)
}

func (s *subscription) run(ctx context.Context) error {
	s.names = s.o.names
	s.secrets = map[string]*tlsv3.Secret{}
	conn, stream, ch, err := s.open(ctx)
	if err != nil {
		return err
	}
	defer func() { conn.Close() }()
	var lingerDone <-chan time.Time
	for {
		var r received
		select {
		case r = <-ch:
		case <-lingerDone:
			return nil
		case <-ctx.Done():
			if s.o.listen != "" && s.listening {
				return nil // served until the timeout, as asked
			}
			if lingerDone != nil {
				return nil
			}
			return fmt.Errorf("sds: saw %d of %d responses before the timeout (%s)", s.n, s.o.events, s.o.timeout)
		}
		if r.err != nil {
			if ctx.Err() != nil && (lingerDone != nil || s.listening) {
				return nil
			}
			emit(errLine("StreamSecrets", r.err))
			return errSilent
		}
		s.n++
		line, bad := describe(r.res)
		line.N, line.Stream = s.n, s.streamNo
		var nack *rpcstatus.Status
		switch {
		case s.o.nack[s.n]:
			nack = &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: fmt.Sprintf("interop: NACK of response %d as asked (--nack)", s.n)}
		case bad != "":
			nack = &rpcstatus.Status{Code: int32(codes.InvalidArgument), Message: bad}
		}
		if nack == nil {
			line.Verdict = "ACK"
			s.accepted = r.res.VersionInfo
			s.accept(r.res)
		} else {
			line.Verdict, line.Reason = "NACK", nack.Message
		}
		emit(line)
		if err := s.send(stream, r.res.Nonce, nack); err != nil {
			emit(errLine("send", err))
			return errSilent
		}
		if names, ok := s.o.thenNames[s.n]; ok {
			s.names = names
			if err := s.send(stream, r.res.Nonce, nil); err != nil {
				emit(errLine("send", err))
				return errSilent
			}
		}
		if err := s.useSecrets(ctx); err != nil {
			return err
		}
		if s.n == s.o.events && s.o.listen == "" {
			if s.o.linger <= 0 {
				return nil
			}
			lingerDone = time.After(s.o.linger)
		}
		if s.o.reconnectAfter[s.n] {
			_ = stream.CloseSend()
			conn.Close()
			if conn, stream, ch, err = s.open(ctx); err != nil {
				return err
			}
		}
	}
}

// accept keeps the secrets of an ACKed response. State of the world: a response names every
// resource the client holds for this subscription.
func (s *subscription) accept(res *discoveryv3.DiscoveryResponse) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.secrets = map[string]*tlsv3.Secret{}
	for _, a := range res.Resources {
		var sec tlsv3.Secret
		if a.UnmarshalTo(&sec) == nil {
			s.secrets[sec.Name] = &sec
		}
	}
}

// current builds a certificate and a validator from the accepted secrets (the first of each kind,
// in the order of the names subscribed to), or says what is missing.
func (s *subscription) current() (*held, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := &held{}
	for _, name := range s.names {
		sec := s.secrets[name]
		if sec == nil {
			continue
		}
		switch {
		case sec.GetTlsCertificate() != nil && h.cert == nil:
			tc := sec.GetTlsCertificate()
			chain, _ := inline(tc.CertificateChain)
			key, _ := inline(tc.PrivateKey)
			cert, err := tls.X509KeyPair(chain, key)
			if err != nil {
				return nil, err
			}
			h.cert = &cert
			if leaf, err := x509.ParseCertificate(cert.Certificate[0]); err == nil {
				if id, err := x509svid.IDFromCert(leaf); err == nil {
					h.self = id.String()
				}
			}
		case sec.GetValidationContext() != nil && h.validation == "":
			vc := sec.GetValidationContext()
			if cv := vc.CustomValidatorConfig; cv != nil {
				set, err := spiffeSet(cv.TypedConfig)
				if err != nil {
					return nil, err
				}
				h.spiffe, h.validation = set, "spiffe_validator"
			} else {
				pemBytes, _ := inline(vc.TrustedCa)
				h.roots = x509.NewCertPool()
				if !h.roots.AppendCertsFromPEM(pemBytes) {
					return nil, fmt.Errorf("secret %q: trusted_ca holds no certificate", name)
				}
				h.validation = "validation_context"
			}
		}
	}
	if h.cert == nil || h.validation == "" {
		return nil, nil
	}
	return h, nil
}

// verify checks a peer's chain as Envoy does: against trusted_ca as plain X.509 (no name check), or
// with the SPIFFE validator against the bundle of the peer's own trust domain only. It returns the
// peer's SPIFFE ID.
func (h *held) verify(rawCerts [][]byte) (string, error) {
	certs := make([]*x509.Certificate, 0, len(rawCerts))
	for _, raw := range rawCerts {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return "", err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return "", errors.New("the peer sent no certificate")
	}
	if h.spiffe != nil {
		id, _, err := x509svid.Verify(certs, h.spiffe)
		if err != nil {
			return "", err
		}
		return id.String(), nil
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: h.roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return "", err
	}
	id, err := x509svid.IDFromCert(certs[0])
	if err != nil {
		return "", err
	}
	return id.String(), nil
}

func (h *held) tlsConfig(server bool, peer *string) *tls.Config {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		Certificates:       []tls.Certificate{*h.cert},
		InsecureSkipVerify: true, // the chain is verified below, as Envoy's validators do
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			id, err := h.verify(raw)
			if err == nil && peer != nil {
				*peer = id
			}
			return err
		},
	}
	if server {
		cfg.ClientAuth = tls.RequireAnyClientCert
	}
	return cfg
}

// useSecrets runs the handshake or starts the listener once the secrets allow it.
func (s *subscription) useSecrets(ctx context.Context) error {
	if (s.o.handshakeWith == "" || s.handshakeRan) && (s.o.listen == "" || s.listening) {
		return nil
	}
	h, err := s.current()
	if err != nil {
		return fmt.Errorf("sds: the secrets received cannot make a TLS configuration: %w", err)
	}
	if h == nil {
		return nil // not yet: a certificate or a validation secret is missing
	}
	if s.o.handshakeWith != "" {
		s.handshakeRan = true
		line := handshake(h, s.o.handshakeWith)
		emit(line)
		if !line.OK {
			return errSilent
		}
		return nil
	}
	ln, err := net.Listen("tcp", s.o.listen)
	if err != nil {
		return err
	}
	s.listening = true
	emit(listenLine{Kind: "listen", Addr: ln.Addr().String(), Self: h.self})
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	go s.serve(ln)
	return nil
}

// handshake dials `addr` as an mTLS client with the held secrets, sends "hi" and reads the reply
// (the peer's verdict on our certificate arrives with TLS 1.3 only then).
func handshake(h *held, addr string) handshakeLine {
	line := handshakeLine{Kind: "handshake", With: addr, Self: h.self, Validation: h.validation}
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	conn, err := tls.DialWithDialer(dialer, "tcp", addr, h.tlsConfig(false, &line.Peer))
	if err != nil {
		line.Error = err.Error()
		return line
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(conn, "hi\n"); err != nil {
		line.Error = err.Error()
		return line
	}
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		line.Error = err.Error()
		return line
	}
	line.Reply = strings.TrimRight(reply, "\r\n")
	line.OK = true
	return line
}

// serve accepts mTLS connections with the newest accepted secrets (a rotation applies to the next
// connection, as in Envoy) and echoes "<peer id> <line>".
func (s *subscription) serve(ln net.Listener) {
	for {
		raw, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer raw.Close()
			h, err := s.current()
			if err != nil || h == nil {
				emit(connLine{Kind: "refused", Error: fmt.Sprintf("no usable secrets: %v", err)})
				return
			}
			var peer string
			conn := tls.Server(raw, h.tlsConfig(true, &peer))
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			if err := conn.Handshake(); err != nil {
				emit(connLine{Kind: "refused", Self: h.self, Error: err.Error()})
				return
			}
			in, err := bufio.NewReader(conn).ReadString('\n')
			if err != nil {
				emit(connLine{Kind: "refused", Self: h.self, Peer: peer, Error: err.Error()})
				return
			}
			emit(connLine{Kind: "accepted", Self: h.self, Peer: peer})
			_, _ = fmt.Fprintf(conn, "%s %s\n", peer, strings.TrimRight(in, "\r\n"))
		}()
	}
}

// describe reads a response as Envoy would and returns its line and, if Envoy would reject it, why.
func describe(res *discoveryv3.DiscoveryResponse) (responseLine, string) {
	line := responseLine{
		Kind: "response", At: sinceStart(), VersionInfo: res.VersionInfo, Nonce: res.Nonce, TypeURL: res.TypeUrl,
		Names: []string{}, Secrets: []secretSeen{},
	}
	var problems []string
	if res.TypeUrl != secretTypeURL {
		problems = append(problems, fmt.Sprintf("type_url %q is not %s", res.TypeUrl, secretTypeURL))
	}
	if err := res.ValidateAll(); err != nil {
		problems = append(problems, "DiscoveryResponse: "+err.Error())
	}
	seenNames := map[string]bool{}
	for i, a := range res.Resources {
		var sec tlsv3.Secret
		if a.GetTypeUrl() != secretTypeURL {
			problems = append(problems, fmt.Sprintf("resource %d has type %q", i, a.GetTypeUrl()))
			continue
		}
		if err := a.UnmarshalTo(&sec); err != nil {
			problems = append(problems, fmt.Sprintf("resource %d: %v", i, err))
			continue
		}
		seen := secretOf(&sec)
		if err := sec.ValidateAll(); err != nil && seen.Error == "" {
			seen.Error = err.Error()
		}
		if seenNames[sec.Name] {
			seen.Error = strings.TrimPrefix(seen.Error+"; duplicate name", "; ")
		}
		seenNames[sec.Name] = true
		if seen.Error != "" {
			problems = append(problems, fmt.Sprintf("secret %q: %s", sec.Name, seen.Error))
		}
		line.Names = append(line.Names, sec.Name)
		line.Secrets = append(line.Secrets, seen)
	}
	return line, strings.Join(problems, "; ")
}

func inline(ds *corev3.DataSource) ([]byte, error) {
	switch v := ds.GetSpecifier().(type) {
	case *corev3.DataSource_InlineBytes:
		return v.InlineBytes, nil
	case *corev3.DataSource_InlineString:
		return []byte(v.InlineString), nil
	case nil:
		return nil, errors.New("empty data source")
	default:
		return nil, fmt.Errorf("data source %T is not inline", v)
	}
}

func pemCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %q is not a CERTIFICATE", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM certificate")
	}
	return certs, nil
}

func caTrustDomains(certs []*x509.Certificate) []string {
	var out []string
	for _, c := range certs {
		for _, u := range c.URIs {
			if td, err := spiffeid.TrustDomainFromURI(u); err == nil {
				out = append(out, td.Name())
			}
		}
	}
	return out
}

func secretOf(sec *tlsv3.Secret) secretSeen {
	out := secretSeen{Name: sec.Name, Kind: "invalid"}
	fail := func(err error) secretSeen { out.Error = err.Error(); return out }
	switch {
	case sec.GetTlsCertificate() != nil:
		out.Kind = "tls_certificate"
		tc := sec.GetTlsCertificate()
		chain, err := inline(tc.CertificateChain)
		if err != nil {
			return fail(fmt.Errorf("certificate_chain: %w", err))
		}
		key, err := inline(tc.PrivateKey)
		if err != nil {
			return fail(fmt.Errorf("private_key: %w", err))
		}
		certs, err := pemCerts(chain)
		if err != nil {
			return fail(fmt.Errorf("certificate_chain: %w", err))
		}
		leaf := certs[0]
		out.Serial, out.ExpiresAt, out.Chain = serialHex(leaf), leaf.NotAfter.Unix(), len(certs)
		if id, err := x509svid.IDFromCert(leaf); err == nil {
			out.SpiffeID = id.String()
		} else {
			return fail(fmt.Errorf("certificate_chain: %w", err))
		}
		if block, _ := pem.Decode(key); block != nil {
			out.KeyPEM = block.Type
		}
		if _, err := tls.X509KeyPair(chain, key); err != nil {
			return fail(fmt.Errorf("the key does not go with the certificate: %w", err))
		}
	case sec.GetValidationContext() != nil:
		vc := sec.GetValidationContext()
		if cv := vc.CustomValidatorConfig; cv != nil {
			out.Kind = "spiffe_validator"
			if cv.Name != spiffeValidator {
				return fail(fmt.Errorf("custom_validator_config name %q is not %s", cv.Name, spiffeValidator))
			}
			set, err := spiffeSet(cv.TypedConfig)
			if err != nil {
				return fail(err)
			}
			out.TrustDomains = map[string]int{}
			for _, b := range set.Bundles() {
				out.TrustDomains[b.TrustDomain().Name()] = len(b.X509Authorities())
			}
			if vc.TrustedCa != nil {
				return fail(errors.New("trusted_ca is set beside the SPIFFE validator, which ignores it"))
			}
			return out
		}
		out.Kind = "validation_context"
		data, err := inline(vc.TrustedCa)
		if err != nil {
			return fail(fmt.Errorf("trusted_ca: %w", err))
		}
		certs, err := pemCerts(data)
		if err != nil {
			return fail(fmt.Errorf("trusted_ca: %w", err))
		}
		out.Authorities, out.CATrustNames = len(certs), caTrustDomains(certs)
		sort.Strings(out.CATrustNames)
	default:
		out.Error = "neither tls_certificate nor validation_context"
	}
	return out
}

// spiffeSet reads SPIFFECertValidatorConfig as Envoy's SPIFFE validator does: one trust_domains
// entry per trust domain, each with an inline PEM bundle.
func spiffeSet(typed interface {
	GetTypeUrl() string
	GetValue() []byte
}) (*x509bundle.Set, error) {
	if typed == nil || typed.GetTypeUrl() != spiffeConfigType {
		url := ""
		if typed != nil {
			url = typed.GetTypeUrl()
		}
		return nil, fmt.Errorf("typed_config has type %q, not %s", url, spiffeConfigType)
	}
	var cfg tlsv3.SPIFFECertValidatorConfig
	if err := proto.Unmarshal(typed.GetValue(), &cfg); err != nil {
		return nil, fmt.Errorf("typed_config: %w", err)
	}
	if err := cfg.ValidateAll(); err != nil {
		return nil, fmt.Errorf("SPIFFECertValidatorConfig: %w", err)
	}
	set := x509bundle.NewSet()
	for _, t := range cfg.TrustDomains {
		td, err := spiffeid.TrustDomainFromString(t.Name)
		if err != nil {
			return nil, fmt.Errorf("trust_domains entry %q: %w", t.Name, err)
		}
		if set.Has(td) {
			return nil, fmt.Errorf("trust domain %q listed twice", t.Name)
		}
		data, err := inline(t.TrustBundle)
		if err != nil {
			return nil, fmt.Errorf("trust domain %q: %w", t.Name, err)
		}
		b, err := x509bundle.Parse(td, data)
		if err != nil {
			return nil, fmt.Errorf("trust domain %q: %w", t.Name, err)
		}
		set.Add(b)
	}
	if len(cfg.TrustDomains) == 0 {
		return nil, errors.New("SPIFFECertValidatorConfig lists no trust domain")
	}
	return set, nil
}

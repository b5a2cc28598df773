package main

import (
	"bufio"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

type tlsFlags struct {
	cert, key, bundles, authorizeID, authorizeMemberOf, addr, message string
}

func parseTLSFlags(name string, args []string, client bool) (*tlsFlags, error) {
	f := &tlsFlags{}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&f.cert, "cert", "", "PEM file: X509-SVID chain, leaf first")
	fs.StringVar(&f.key, "key", "", "PEM file: PKCS#8 private key")
	fs.StringVar(&f.bundles, "bundle", "", "td=pemfile[,td=pemfile...]: X.509 bundles")
	fs.StringVar(&f.authorizeID, "authorize-id", "", "authorize exactly this peer SPIFFE ID")
	fs.StringVar(&f.authorizeMemberOf, "authorize-member-of", "", "authorize any peer in this trust domain")
	defAddr := "127.0.0.1:0"
	if client {
		defAddr = ""
		fs.StringVar(&f.message, "message", "hi", "line to send")
	}
	fs.StringVar(&f.addr, "addr", defAddr, "listen (server) or dial (client) address")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if f.cert == "" || f.key == "" || f.bundles == "" || f.addr == "" {
		return nil, errors.New(name + ": --cert, --key, --bundle and --addr are required")
	}
	if (f.authorizeID == "") == (f.authorizeMemberOf == "") {
		return nil, errors.New(name + ": exactly one of --authorize-id and --authorize-member-of is required")
	}
	return f, nil
}

func (f *tlsFlags) material() (*x509svid.SVID, *x509bundle.Set, tlsconfig.Authorizer, error) {
	svid, err := x509svid.Load(f.cert, f.key)
	if err != nil {
		return nil, nil, nil, err
	}
	set := x509bundle.NewSet()
	for _, item := range strings.Split(f.bundles, ",") {
		name, file, ok := strings.Cut(item, "=")
		if !ok {
			return nil, nil, nil, fmt.Errorf("--bundle entry %q is not td=file", item)
		}
		td, err := spiffeid.TrustDomainFromString(name)
		if err != nil {
			return nil, nil, nil, err
		}
		b, err := x509bundle.Load(td, file)
		if err != nil {
			return nil, nil, nil, err
		}
		set.Add(b)
	}
	authorizer, err := authorizerOf(f.authorizeID, f.authorizeMemberOf)
	if err != nil {
		return nil, nil, nil, err
	}
	return svid, set, authorizer, nil
}

// authorizerOf is tlsconfig.AuthorizeID(id) or tlsconfig.AuthorizeMemberOf(td): exactly one of them.
func authorizerOf(id, memberOf string) (tlsconfig.Authorizer, error) {
	if (id == "") == (memberOf == "") {
		return nil, errors.New("exactly one of --authorize-id and --authorize-member-of is required")
	}
	if id != "" {
		parsed, err := spiffeid.FromString(id)
		if err != nil {
			return nil, err
		}
		return tlsconfig.AuthorizeID(parsed), nil
	}
	td, err := spiffeid.TrustDomainFromString(memberOf)
	if err != nil {
		return nil, err
	}
	return tlsconfig.AuthorizeMemberOf(td), nil
}

func runTLSServer(args []string) error {
	f, err := parseTLSFlags("tls-server", args, false)
	if err != nil {
		return err
	}
	svid, set, authorizer, err := f.material()
	if err != nil {
		return err
	}
	ln, err := tls.Listen("tcp", f.addr, tlsconfig.MTLSServerConfig(svid, set, authorizer))
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
		go serve(conn.(*tls.Conn))
	}
}

func serve(conn *tls.Conn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if err := conn.Handshake(); err != nil {
		fmt.Fprintf(os.Stderr, "REFUSED %s: %v\n", conn.RemoteAddr(), err)
		return
	}
	// The handshake verified the chain and ran the authorizer; this names who passed.
	peers := conn.ConnectionState().PeerCertificates
	if len(peers) == 0 {
		fmt.Fprintf(os.Stderr, "REFUSED %s: no peer certificate\n", conn.RemoteAddr())
		return
	}
	id, err := x509svid.IDFromCert(peers[0])
	if err != nil {
		fmt.Fprintf(os.Stderr, "REFUSED %s: %v\n", conn.RemoteAddr(), err)
		return
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		fmt.Fprintf(os.Stderr, "READ %s (%s): %v\n", conn.RemoteAddr(), id, err)
		return
	}
	fmt.Fprintf(os.Stderr, "ACCEPTED %s (%s)\n", conn.RemoteAddr(), id)
	_, _ = fmt.Fprintf(conn, "%s %s\n", id, strings.TrimRight(line, "\r\n"))
}

func runTLSClient(args []string) error {
	f, err := parseTLSFlags("tls-client", args, true)
	if err != nil {
		return err
	}
	svid, set, authorizer, err := f.material()
	if err != nil {
		return err
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	conn, err := tls.DialWithDialer(dialer, "tcp", f.addr, tlsconfig.MTLSClientConfig(svid, set, authorizer))
	if err != nil {
		return connError{err}
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(conn, "%s\n", f.message); err != nil {
		return connError{err}
	}
	// With TLS 1.3 the server's verdict on our certificate arrives after the client handshake
	// completes, so a refusal shows up here as an alert on read.
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return connError{err}
	}
	fmt.Print(line)
	return nil
}

// connError is a failure talking to the peer (refused handshake, alert, reset): the client
// prints it as "ERROR <msg>" on stdout, so the test can tell it from a usage error.
type connError struct{ err error }

func (e connError) Error() string { return e.err.Error() }

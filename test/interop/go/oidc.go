package main

// interop oidc-verify: coreos/go-oidc v3 as an OIDC relying party of a JWT-SVID. It discovers the
// issuer (oidc.NewProvider: <issuer>/.well-known/openid-configuration, whose issuer must equal
// --issuer), then verifies the token with provider.Verifier (signature by the JWK Set at jwks_uri,
// iss, aud = --audience, exp), exactly as an application using go-oidc does. Prints one JSON line:
//
//	{"verdict":"accepted","subject":…,"issuer":…,"audience":[…],"expiry":unix,"jwks_uri":…,"algorithms":[…]}   exit 0
//	{"verdict":"refused","error":…}                                                                     exit 1
//	{"verdict":"error","stage":"discovery","error":…}                                                   exit 3

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

func runOIDCVerify(args []string) error {
	fs := flag.NewFlagSet("oidc-verify", flag.ContinueOnError)
	issuer := fs.String("issuer", "", "the issuer URL to discover")
	audience := fs.String("audience", "", "the audience the token must be for (go-oidc's ClientID)")
	token := fs.String("token", "", "the JWT-SVID")
	caFile := fs.String("ca", "", "PEM roots for the discovery server's certificate (default: the system's)")
	timeout := fs.Duration("timeout", 20*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if *issuer == "" || *audience == "" || *token == "" {
		return usageError{errors.New("oidc-verify needs --issuer, --audience and --token")}
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return usageError{err}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return usageError{fmt.Errorf("%s holds no PEM certificate", *caFile)}
		}
		ctx = oidc.ClientContext(ctx, &http.Client{
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
		})
	}
	out := json.NewEncoder(os.Stdout)
	provider, err := oidc.NewProvider(ctx, *issuer)
	if err != nil {
		_ = out.Encode(map[string]any{"verdict": "error", "stage": "discovery", "error": err.Error()})
		os.Exit(3)
	}
	var doc struct {
		JWKSURI    string   `json:"jwks_uri"`
		Algorithms []string `json:"id_token_signing_alg_values_supported"`
	}
	if err := provider.Claims(&doc); err != nil {
		_ = out.Encode(map[string]any{"verdict": "error", "stage": "discovery", "error": err.Error()})
		os.Exit(3)
	}
	idToken, err := provider.Verifier(&oidc.Config{ClientID: *audience}).Verify(ctx, *token)
	if err != nil {
		_ = out.Encode(map[string]any{"verdict": "refused", "error": err.Error()})
		return errSilent
	}
	return out.Encode(map[string]any{
		"verdict":    "accepted",
		"subject":    idToken.Subject,
		"issuer":     idToken.Issuer,
		"audience":   idToken.Audience,
		"expiry":     idToken.Expiry.Unix(),
		"jwks_uri":   doc.JWKSURI,
		"algorithms": doc.Algorithms,
	})
}

package main

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// vector is one test input; which fields are used depends on Kind.
type vector struct {
	ID          string            `json:"id"`
	Kind        string            `json:"kind"`
	Input       string            `json:"input,omitempty"`       // spiffeid, trustdomain
	TrustDomain string            `json:"trustDomain,omitempty"` // x509bundle, jwtbundle, spiffebundle
	Data        string            `json:"data,omitempty"`        // bundle document (PEM, JWKS, SPIFFE bundle JSON)
	ChainPem    string            `json:"chainPem,omitempty"`    // x509svid-verify, x509svid-parse
	KeyPem      string            `json:"keyPem,omitempty"`      // x509svid-parse
	Bundles     map[string]string `json:"bundles,omitempty"`     // trust domain -> PEM (x509svid-verify) or JWKS (jwtsvid-validate)
	Now         string            `json:"now,omitempty"`         // RFC 3339; x509svid-verify only
	Token       string            `json:"token,omitempty"`       // jwtsvid-validate
	Audience    []string          `json:"audience,omitempty"`    // jwtsvid-validate
}

type verdict struct {
	ID      string  `json:"id"`
	OK      bool    `json:"ok"`
	Value   *string `json:"value,omitempty"`
	Error   string  `json:"error,omitempty"`
	Skipped bool    `json:"skipped,omitempty"`
}

func runVerdicts(path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var vectors []vector
	if err := json.Unmarshal(raw, &vectors); err != nil {
		return fmt.Errorf("reading vectors %s: %w", path, err)
	}
	out := make([]verdict, 0, len(vectors))
	for _, v := range vectors {
		value, err := evaluate(v)
		switch {
		case err == errUnknownKind:
			out = append(out, verdict{ID: v.ID, Skipped: true, Error: "unknown kind " + v.Kind})
		case err != nil:
			out = append(out, verdict{ID: v.ID, OK: false, Error: err.Error()})
		default:
			out = append(out, verdict{ID: v.ID, OK: true, Value: &value})
		}
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	return enc.Encode(out)
}

var errUnknownKind = fmt.Errorf("unknown kind")

func evaluate(v vector) (string, error) {
	switch v.Kind {
	case "spiffeid":
		id, err := spiffeid.FromString(v.Input)
		if err != nil {
			return "", err
		}
		return id.String(), nil
	case "trustdomain":
		td, err := spiffeid.TrustDomainFromString(v.Input)
		if err != nil {
			return "", err
		}
		return td.Name(), nil
	case "x509bundle":
		td, err := spiffeid.TrustDomainFromString(v.TrustDomain)
		if err != nil {
			return "", err
		}
		b, err := x509bundle.Parse(td, []byte(v.Data))
		if err != nil {
			return "", err
		}
		return strconv.Itoa(len(b.X509Authorities())), nil
	case "jwtbundle":
		td, err := spiffeid.TrustDomainFromString(v.TrustDomain)
		if err != nil {
			return "", err
		}
		b, err := jwtbundle.Parse(td, []byte(v.Data))
		if err != nil {
			return "", err
		}
		return strconv.Itoa(len(b.JWTAuthorities())), nil
	case "spiffebundle":
		td, err := spiffeid.TrustDomainFromString(v.TrustDomain)
		if err != nil {
			return "", err
		}
		b, err := spiffebundle.Parse(td, []byte(v.Data))
		if err != nil {
			return "", err
		}
		seq := "none"
		if n, ok := b.SequenceNumber(); ok {
			seq = strconv.FormatUint(n, 10)
		}
		refresh := "none"
		if d, ok := b.RefreshHint(); ok {
			refresh = strconv.FormatInt(int64(d/time.Second), 10)
		}
		return fmt.Sprintf("x509=%d jwt=%d seq=%s refresh=%s", len(b.X509Authorities()), len(b.JWTAuthorities()), seq, refresh), nil
	case "x509svid-verify":
		set := x509bundle.NewSet()
		for name, data := range v.Bundles {
			td, err := spiffeid.TrustDomainFromString(name)
			if err != nil {
				return "", fmt.Errorf("vector bundle key: %w", err)
			}
			b, err := x509bundle.Parse(td, []byte(data))
			if err != nil {
				return "", fmt.Errorf("vector bundle %s: %w", name, err)
			}
			set.Add(b)
		}
		var opts []x509svid.VerifyOption
		if v.Now != "" {
			now, err := time.Parse(time.RFC3339Nano, v.Now)
			if err != nil {
				return "", fmt.Errorf("vector now: %w", err)
			}
			opts = append(opts, x509svid.WithTime(now))
		}
		id, _, err := x509svid.ParseAndVerify(pemBlocks([]byte(v.ChainPem)), set, opts...)
		if err != nil {
			return "", err
		}
		return id.String(), nil
	case "x509svid-parse":
		svid, err := x509svid.Parse([]byte(v.ChainPem), []byte(v.KeyPem))
		if err != nil {
			return "", err
		}
		return svid.ID.String(), nil
	case "jwtsvid-validate":
		set := jwtbundle.NewSet()
		for name, data := range v.Bundles {
			td, err := spiffeid.TrustDomainFromString(name)
			if err != nil {
				return "", fmt.Errorf("vector bundle key: %w", err)
			}
			b, err := jwtbundle.Parse(td, []byte(data))
			if err != nil {
				return "", fmt.Errorf("vector bundle %s: %w", name, err)
			}
			set.Add(b)
		}
		svid, err := jwtsvid.ParseAndValidate(v.Token, set, v.Audience)
		if err != nil {
			return "", err
		}
		return svid.ID.String(), nil
	}
	return "", errUnknownKind
}

// pemBlocks returns the DER of every CERTIFICATE block, in order.
func pemBlocks(data []byte) [][]byte {
	var out [][]byte
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return out
		}
		if block.Type == "CERTIFICATE" {
			out = append(out, block.Bytes)
		}
	}
}

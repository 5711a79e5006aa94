// Command notation-go is a thin CLI over notation-go's signer and verifier, standing in for the
// notation CLI in sigaudit's integration tests: the Go module proxy refuses the
// github.com/notaryproject/notation module here (403), but notation-go, the library that
// implements `notation sign` and `notation verify`, is available. The wiring copies the CLI's
// (notation v1.3.2 cmd/notation/{sign,verify,registry}.go, internal/revocation): an oras-go
// remote repository, notation.Sign / notation.Verify, OCSP (2s) and CRL (5s, no cache) revocation.
//
//	notation-go sign --key KEY.pem --cert CHAIN.pem [--signature-format jws|cose] [--expiry 24h]
//	    [--force-referrers-tag] [--insecure-registry] HOST/REPO@DIGEST
//	notation-go verify --trust-policy trustpolicy.json --trust-store DIR [--insecure-registry] HOST/REPO@DIGEST
//
// DIR is the directory holding x509/{ca,signingAuthority,tsa}/<name>/*.pem. Each command prints
// one JSON line on stdout. Exit status: 0 success, 1 verification failed, 2 usage or I/O error.
// Unlike the notation CLI (whose --force-referrers-tag defaults to true), sign uses the referrers
// API when the registry has it and the referrers tag schema otherwise, unless --force-referrers-tag.
// "Has it" is learnt by listing the image's referrers first (as oras-go does on reads), because
// oras-go otherwise relies on an OCI-Subject response header that not every registry sends.
// --trust-store names the directory holding x509/ (sigaudit's trustStore), not notation's config dir.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/notaryproject/notation-core-go/revocation"
	corecrl "github.com/notaryproject/notation-core-go/revocation/crl"
	"github.com/notaryproject/notation-core-go/revocation/purpose"
	"github.com/notaryproject/notation-go"
	"github.com/notaryproject/notation-go/dir"
	notationregistry "github.com/notaryproject/notation-go/registry"
	"github.com/notaryproject/notation-go/signer"
	"github.com/notaryproject/notation-go/verifier"
	"github.com/notaryproject/notation-go/verifier/trustpolicy"
	"github.com/notaryproject/notation-go/verifier/truststore"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: notation-go sign|verify [flags] HOST/REPO@DIGEST")
		os.Exit(2)
	}
	var code int
	switch os.Args[1] {
	case "sign":
		code = runSign(os.Args[2:])
	case "verify":
		code = runVerify(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q\n", os.Args[1])
		code = 2
	}
	os.Exit(code)
}

func emit(v any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func fatal(err error) int {
	emit(map[string]any{"error": err.Error()})
	fmt.Fprintln(os.Stderr, "notation-go:", err)
	return 2
}

// storeFS serves notation's "truststore/x509/..." paths from a directory holding x509/.
type storeFS struct{ root string }

func (s storeFS) rel(name string) string {
	return filepath.Join(s.root, strings.TrimPrefix(strings.TrimPrefix(name, dir.TrustStoreDir), "/"))
}

func (s storeFS) Open(name string) (fs.File, error) { return os.Open(s.rel(name)) }

func (s storeFS) SysPath(items ...string) (string, error) { return s.rel(filepath.Join(items...)), nil }

func repository(ctx context.Context, reference string, insecure, forceTag bool) (notationregistry.Repository, registry.Reference, error) {
	ref, err := registry.ParseReference(reference)
	if err != nil {
		return nil, ref, err
	}
	if ref.Reference == "" {
		return nil, ref, fmt.Errorf("%q: no tag or digest", reference)
	}
	remoteRepo := &remote.Repository{Client: &auth.Client{Client: &http.Client{Timeout: 30 * time.Second}, Cache: auth.NewCache()},
		Reference: ref, PlainHTTP: insecure}
	if forceTag {
		if err := remoteRepo.SetReferrersCapability(false); err != nil {
			return nil, ref, err
		}
	} else if desc, err := remoteRepo.Resolve(ctx, ref.Reference); err == nil {
		// Learn whether the referrers API exists (oras-go falls back to the tag schema if not).
		_ = remoteRepo.Referrers(ctx, desc, "", func([]ocispec.Descriptor) error { return nil })
	}
	return notationregistry.NewRepository(remoteRepo), ref, nil
}

func runSign(args []string) int {
	flags := flag.NewFlagSet("sign", flag.ContinueOnError)
	key := flags.String("key", "", "PEM private key")
	cert := flags.String("cert", "", "PEM certificate chain, leaf first")
	format := flags.String("signature-format", "jws", "jws or cose")
	expiry := flags.Duration("expiry", 0, "signature expiry duration (0: none)")
	forceTag := flags.Bool("force-referrers-tag", false, "always use the referrers tag schema")
	insecure := flags.Bool("insecure-registry", false, "plain HTTP")
	if err := flags.Parse(args); err != nil || flags.NArg() != 1 {
		return 2
	}
	mediaType := map[string]string{"jws": "application/jose+json", "cose": "application/cose"}[*format]
	if mediaType == "" {
		return fatal(fmt.Errorf("unknown signature format %q", *format))
	}
	s, err := signer.NewGenericSignerFromFiles(*key, *cert)
	if err != nil {
		return fatal(err)
	}
	ctx := context.Background()
	repo, ref, err := repository(ctx, flags.Arg(0), *insecure, *forceTag)
	if err != nil {
		return fatal(err)
	}
	desc, err := repo.Resolve(ctx, ref.Reference)
	if err != nil {
		return fatal(err)
	}
	opts := notation.SignOptions{
		SignerSignOptions: notation.SignerSignOptions{SignatureMediaType: mediaType, ExpiryDuration: *expiry},
		ArtifactReference: desc.Digest.String(),
	}
	if _, err := notation.Sign(ctx, s, repo, opts); err != nil {
		return fatal(err)
	}
	emit(map[string]any{"signed": flags.Arg(0), "digest": desc.Digest.String(), "signatureMediaType": mediaType})
	return 0
}

// recorder keeps every outcome the real verifier returns, so failures show their per-check results
// (notation.Verify returns outcomes only on success).
type recorder struct {
	inner    notation.Verifier
	outcomes []*notation.VerificationOutcome
}

func (r *recorder) Verify(ctx context.Context, desc ocispec.Descriptor, sig []byte, opts notation.VerifierVerifyOptions) (*notation.VerificationOutcome, error) {
	o, err := r.inner.Verify(ctx, desc, sig, opts)
	if o != nil {
		r.outcomes = append(r.outcomes, o)
	}
	return o, err
}

func (r *recorder) SkipVerify(ctx context.Context, opts notation.VerifierVerifyOptions) (bool, *trustpolicy.VerificationLevel, error) {
	return r.inner.(interface {
		SkipVerify(context.Context, notation.VerifierVerifyOptions) (bool, *trustpolicy.VerificationLevel, error)
	}).SkipVerify(ctx, opts)
}

func revocationValidator(p purpose.Purpose) (revocation.Validator, error) {
	fetcher, err := corecrl.NewHTTPFetcher(&http.Client{Timeout: 5 * time.Second})
	if err != nil {
		return nil, err
	}
	return revocation.NewWithOptions(revocation.Options{
		OCSPHTTPClient: &http.Client{Timeout: 2 * time.Second}, CRLFetcher: fetcher, CertChainPurpose: p,
	})
}

func outcomeJSON(o *notation.VerificationOutcome) map[string]any {
	results := []map[string]any{}
	for _, r := range o.VerificationResults {
		e := ""
		if r.Error != nil {
			e = r.Error.Error()
		}
		results = append(results, map[string]any{"type": string(r.Type), "action": string(r.Action), "error": e})
	}
	m := map[string]any{"results": results}
	if o.VerificationLevel != nil {
		m["level"] = o.VerificationLevel.Name
	}
	if o.Error != nil {
		m["error"] = o.Error.Error()
	}
	if o.EnvelopeContent != nil {
		sa := o.EnvelopeContent.SignerInfo.SignedAttributes
		m["signingTime"] = sa.SigningTime.UTC().Format(time.RFC3339)
		if !sa.Expiry.IsZero() {
			m["expiry"] = sa.Expiry.UTC().Format(time.RFC3339)
		}
	}
	return m
}

func runVerify(args []string) int {
	flags := flag.NewFlagSet("verify", flag.ContinueOnError)
	policyPath := flags.String("trust-policy", "", "trustpolicy.json")
	storeDir := flags.String("trust-store", "", "directory holding x509/<type>/<name>/")
	insecure := flags.Bool("insecure-registry", false, "plain HTTP")
	maxSigs := flags.Int("max-signatures", 100, "maximum number of signatures to evaluate")
	if err := flags.Parse(args); err != nil || flags.NArg() != 1 {
		return 2
	}
	raw, err := os.ReadFile(*policyPath)
	if err != nil {
		return fatal(err)
	}
	var doc trustpolicy.Document
	if err := json.Unmarshal(raw, &doc); err != nil {
		return fatal(err)
	}
	codeSigning, err := revocationValidator(purpose.CodeSigning)
	if err != nil {
		return fatal(err)
	}
	timestamping, err := revocationValidator(purpose.Timestamping)
	if err != nil {
		return fatal(err)
	}
	store := truststore.NewX509TrustStore(storeFS{root: *storeDir})
	inner, err := verifier.NewWithOptions(&doc, store, nil, verifier.VerifierOptions{
		RevocationCodeSigningValidator: codeSigning, RevocationTimestampingValidator: timestamping,
	})
	if err != nil {
		return fatal(err)
	}
	v := &recorder{inner: inner}
	ctx := context.Background()
	repo, _, err := repository(ctx, flags.Arg(0), *insecure, false)
	if err != nil {
		return fatal(err)
	}
	_, outcomes, err := notation.Verify(ctx, v, repo, notation.VerifyOptions{
		ArtifactReference: flags.Arg(0), MaxSignatureAttempts: *maxSigs,
	})
	out := map[string]any{"reference": flags.Arg(0), "verified": err == nil && len(outcomes) > 0}
	if err != nil {
		out["error"] = err.Error()
	}
	if len(outcomes) > 0 && outcomes[0].VerificationLevel != nil {
		out["level"] = outcomes[0].VerificationLevel.Name
	}
	signatures := []map[string]any{}
	for _, o := range v.outcomes {
		signatures = append(signatures, outcomeJSON(o))
	}
	out["signatures"] = signatures
	emit(out)
	if out["verified"] == true {
		return 0
	}
	return 1
}

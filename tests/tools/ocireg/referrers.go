package main

// The OCI 1.1 referrers API (distribution-spec v1.1 "Listing Referrers"), served in
// front of go-containerregistry's registry, whose own referrers handler reports
// config.mediaType as artifactType and ignores the artifactType filter.
//
// Manifests with a `subject` are noted as they are pushed (successful PUTs) and
// forgotten when deleted by digest.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
)

const (
	ociIndex         = "application/vnd.oci.image.index.v1+json"
	maxManifestBytes = 4 << 20 // distribution's own manifest limit
)

type descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

type referrers struct {
	mu sync.RWMutex
	// repo -> subject digest -> referrer digest -> descriptor
	byRepo map[string]map[string]map[string]descriptor
}

func newReferrers() *referrers {
	return &referrers{byRepo: map[string]map[string]map[string]descriptor{}}
}

// splitPath turns /v2/<repo>/<kind>/<ref> into (repo, kind, ref).
func splitPath(path string) (repo, kind, ref string, ok bool) {
	if !strings.HasPrefix(path, "/v2/") {
		return "", "", "", false
	}
	elems := strings.Split(strings.TrimPrefix(path, "/v2/"), "/")
	if len(elems) < 3 {
		return "", "", "", false
	}
	n := len(elems)
	return strings.Join(elems[:n-2], "/"), elems[n-2], elems[n-1], true
}

func (r *referrers) note(repo, contentType string, body []byte) {
	var m struct {
		MediaType    string `json:"mediaType"`
		ArtifactType string `json:"artifactType"`
		Config       *struct {
			MediaType string `json:"mediaType"`
		} `json:"config"`
		Subject *struct {
			Digest string `json:"digest"`
		} `json:"subject"`
		Annotations map[string]string `json:"annotations"`
	}
	if json.Unmarshal(body, &m) != nil || m.Subject == nil || m.Subject.Digest == "" {
		return
	}
	artifactType := m.ArtifactType
	if artifactType == "" && m.Config != nil {
		artifactType = m.Config.MediaType
	}
	mediaType := m.MediaType
	if mediaType == "" {
		mediaType = contentType
	}
	sum := sha256.Sum256(body)
	d := descriptor{
		MediaType:    mediaType,
		Digest:       "sha256:" + hex.EncodeToString(sum[:]),
		Size:         int64(len(body)),
		ArtifactType: artifactType,
		Annotations:  m.Annotations,
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	subjects := r.byRepo[repo]
	if subjects == nil {
		subjects = map[string]map[string]descriptor{}
		r.byRepo[repo] = subjects
	}
	if subjects[m.Subject.Digest] == nil {
		subjects[m.Subject.Digest] = map[string]descriptor{}
	}
	subjects[m.Subject.Digest][d.Digest] = d
}

func subjectOf(body []byte) string {
	var m struct {
		Subject *struct {
			Digest string `json:"digest"`
		} `json:"subject"`
	}
	if json.Unmarshal(body, &m) != nil || m.Subject == nil {
		return ""
	}
	return m.Subject.Digest
}

func (r *referrers) forget(repo, digest string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, refs := range r.byRepo[repo] {
		delete(refs, digest)
	}
}

func (r *referrers) serve(w http.ResponseWriter, req *http.Request, repo, subject string) {
	if !strings.HasPrefix(subject, "sha256:") && !strings.HasPrefix(subject, "sha512:") {
		writeError(w, http.StatusBadRequest, "DIGEST_INVALID", "subject must be a digest")
		return
	}
	want := req.URL.Query().Get("artifactType")
	r.mu.RLock()
	list := []descriptor{}
	for _, d := range r.byRepo[repo][subject] {
		if want == "" || d.ArtifactType == want {
			list = append(list, d)
		}
	}
	r.mu.RUnlock()
	sort.Slice(list, func(i, j int) bool { return list[i].Digest < list[j].Digest })
	body, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": ociIndex, "manifests": list})
	w.Header().Set("Content-Type", ociIndex)
	if want != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	body, _ := json.Marshal(map[string]any{"errors": []map[string]string{{"code": code, "message": message}}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// wrap serves GET .../referrers/<digest> itself and watches manifest PUTs and DELETEs.
func (r *referrers) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		repo, kind, ref, ok := splitPath(req.URL.Path)
		switch {
		case ok && kind == "referrers" && (req.Method == http.MethodGet || req.Method == http.MethodHead):
			r.serve(w, req, repo, ref)
		case ok && kind == "manifests" && req.Method == http.MethodPut:
			body, err := io.ReadAll(io.LimitReader(req.Body, maxManifestBytes+1))
			if err != nil || len(body) > maxManifestBytes {
				writeError(w, http.StatusRequestEntityTooLarge, "SIZE_INVALID", "manifest too large")
				return
			}
			req.Body = io.NopCloser(bytes.NewReader(body))
			subject := subjectOf(body)
			rec := &recorder{ResponseWriter: w}
			if subject != "" {
				// distribution-spec: a registry that processed `subject` says so with OCI-Subject.
				rec.beforeHeader = func(status int) {
					if status == http.StatusCreated {
						w.Header().Set("OCI-Subject", subject)
					}
				}
			}
			next.ServeHTTP(rec, req)
			if rec.status == http.StatusCreated {
				r.note(repo, req.Header.Get("Content-Type"), body)
			}
		case ok && kind == "manifests" && req.Method == http.MethodDelete:
			rec := &recorder{ResponseWriter: w}
			next.ServeHTTP(rec, req)
			if rec.status/100 == 2 {
				r.forget(repo, ref)
			}
		default:
			next.ServeHTTP(w, req)
		}
	})
}

"""Notary Project (notation) signature verification, to the trust-store-trust-policy specification.

``NotationVerifier`` is built once from a ``trustpolicy.json`` and a trust store directory (files
are read in ``from_spec``: the edge) and then judges the notation signatures discovery attached to
a running digest. The steps and their order are those of notaryproject/specifications
``specs/trust-store-trust-policy.md`` "Signature Verification": integrity, authenticity (trust
store, trusted identity), expiry, authentic timestamp, revocation; the statement's verification
level (and ``override``) decides which failures are enforced and which are only reported.
An enforced failure stops the evaluation of that signature, as notation does; the later checks
are reported as skipped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from scanner.errors import ConfigError, ParseError
from scanner.models import (
    Check,
    CheckName,
    Descriptor,
    Outcome,
    ReferrerArtifact,
    RunningImage,
    SignatureFailure,
    SignatureMaterial,
    SignatureResult,
    SignedTime,
    TimeSource,
)
from scanner.verify import sources
from scanner.verify.base import Fetcher, Verifier, Wants, identity_of
from scanner.verify.kinds.notation import NotationVerifierSpec
from scanner.verify.notation_envelope import (
    SCHEME_SIGNING_AUTHORITY,
    SCHEME_X509,
    Envelope,
    EnvelopeError,
    parse_envelope,
)
from scanner.verify.notation_trust import (
    Action,
    Level,
    NamedStore,
    TrustPolicyDocument,
    TrustPolicyError,
    TrustPolicyStatement,
    TrustStoreError,
    Validation,
    check_trusted_identities,
    load_named_store,
    load_trust_policy,
    load_trust_store_crs,
    subject_string,
)
from scanner.verify.revocation import CRLCache, RevocationChecker, RevocationStatus
from scanner.verify.timestamps import TimestampError, VerifiedTimestamp, verify_timestamp_token
from scanner.verify.x509 import (
    ChainError,
    chain_trusted_by,
    der,
    fingerprint,
    spki_sha256,
    trust_anchors,
    validate_signing_chain,
)


def _q(value: object) -> str:
    """Quote like Go's %q, so messages read as notation's do."""
    return json.dumps(value)

NOTATION_ARTIFACT_TYPE = "application/vnd.cncf.notary.signature"
KIND = "notation"
_TIME_FMT = "%a, %d %b %Y %H:%M:%S +0000"

_CHECK_FOR = {
    Validation.INTEGRITY: CheckName.INTEGRITY,
    Validation.AUTHENTICITY: CheckName.AUTHENTICITY,
    Validation.EXPIRY: CheckName.EXPIRY,
    Validation.AUTHENTIC_TIMESTAMP: CheckName.TIMESTAMP,
    Validation.REVOCATION: CheckName.REVOCATION,
}


def _fmt(t: datetime) -> str:
    return t.strftime(_TIME_FMT)


@dataclass(frozen=True, slots=True)
class TimestampCheck:
    """Outcome of the authentic-timestamp step: ``problem`` is None when it passed."""

    problem: str | None
    expired_certificate: bool = False  # the failure is "a chain certificate is outside its validity"
    timestamp: VerifiedTimestamp | None = None
    error: bool = False  # could not be decided (e.g. TSA revocation status unknown)


def check_authentic_timestamp(env: Envelope, statement: TrustPolicyStatement,
                              tsa_certs: Sequence[x509.Certificate] | None, now: datetime,
                              revocation: RevocationChecker | None = None) -> TimestampCheck:
    """trust-store-trust-policy.md "Authentic timestamp" (as notation-go ``verifyTimestamp``).

    ``tsa_certs`` None means the statement names no ``tsa`` store. ``revocation`` None means the
    TSA chain's revocation is not checked (the caller decided revocation is skipped).
    """
    chain = env.certificates
    if env.signing_scheme == SCHEME_SIGNING_AUTHORITY:
        # The signing authority vouches for authenticSigningTime; it must lie in every validity period.
        t = env.authentic_signing_time
        assert t is not None
        for cert in chain:
            if t < cert.not_valid_before_utc or t > cert.not_valid_after_utc:
                return TimestampCheck(f"certificate {_q(subject_string(cert.subject))} was not valid when the "
                                      f"digital signature was produced at {_q(_fmt(t))}", expired_certificate=True)
        return TimestampCheck(None)
    perform = tsa_certs is not None
    if perform and statement.verify_timestamp == "afterCertExpiry":
        perform = any(now > c.not_valid_after_utc for c in chain)
    if not perform:
        for cert in chain:
            if now < cert.not_valid_before_utc:
                return TimestampCheck(f"verification time is before certificate {_q(subject_string(cert.subject))} "
                                      f"validity period, it will be valid from "
                                      f"{_q(_fmt(cert.not_valid_before_utc))}", expired_certificate=True)
            if now > cert.not_valid_after_utc:
                return TimestampCheck(f"verification time is after certificate {_q(subject_string(cert.subject))} "
                                      f"validity period, it was expired at {_q(_fmt(cert.not_valid_after_utc))}",
                                      expired_certificate=True)
        return TimestampCheck(None)
    assert tsa_certs is not None
    if not env.timestamp_token:
        return TimestampCheck("no timestamp countersignature was found in the signature envelope")
    try:
        ts = verify_timestamp_token(env.timestamp_token, env.signature, tsa_certs)
    except TimestampError as exc:
        return TimestampCheck(str(exc))
    for cert in chain:
        if ts.earliest < cert.not_valid_before_utc:
            return TimestampCheck(f"timestamp can be before certificate {_q(subject_string(cert.subject))} validity "
                                  f"period, it will be valid from {_q(_fmt(cert.not_valid_before_utc))}",
                                  expired_certificate=True, timestamp=ts)
        if ts.latest > cert.not_valid_after_utc:
            return TimestampCheck(f"timestamp can be after certificate {_q(subject_string(cert.subject))} validity "
                                  f"period, it was expired at {_q(_fmt(cert.not_valid_after_utc))}",
                                  expired_certificate=True, timestamp=ts)
    if revocation is not None:
        # No signing time: genTime is the claim of the very key under check, so it never earns the
        # invalidityDate exception for that key (notation-go checks this chain with none either); a
        # compromised TSA key would otherwise backdate its tokens before the date its CRL entry gives.
        rr = revocation.check_chain(ts.tsa_chain, now)
        if rr.status is RevocationStatus.REVOKED:
            return TimestampCheck(f"timestamping certificate chain: {rr.reason}", timestamp=ts)
        if rr.status is RevocationStatus.UNKNOWN:
            return TimestampCheck(f"timestamping certificate chain: {rr.reason}", timestamp=ts, error=True)
    return TimestampCheck(None, timestamp=ts)


class _Run:
    """Collects the checks of one signature, applying the statement's actions."""

    def __init__(self, statement: TrustPolicyStatement) -> None:
        self.statement = statement
        self.checks: list[Check] = []
        self.stopped: tuple[Validation, str, bool] | None = None  # (validation, reason, is_error)
        self.logged: list[str] = []

    def action(self, v: Validation) -> Action:
        return self.statement.action(v)

    def record(self, v: Validation, problem: str | None, *, passed_reason: str = "",
               error: bool = False, name: CheckName | None = None) -> None:
        act = self.action(v)
        check_name = name or _CHECK_FOR[v]
        if act is Action.SKIP:
            self.checks.append(Check(check_name, Outcome.SKIPPED, f"{v.value} is set to \"skip\"", enforced=False))
            return
        enforced = act is Action.ENFORCE
        if problem is None:
            self.checks.append(Check(check_name, Outcome.PASSED, passed_reason, enforced=enforced))
            return
        outcome = Outcome.ERROR if error else Outcome.FAILED
        self.checks.append(Check(check_name, outcome, problem, enforced=enforced))
        if enforced:
            if self.stopped is None:
                self.stopped = (v, problem, error)
        else:
            self.logged.append(f"{v.value} was set to \"log\" and failed with error: {problem}")

    def skip_rest(self, names: Sequence[CheckName]) -> None:
        assert self.stopped is not None
        for n in names:
            if not any(c.name is n for c in self.checks):
                self.checks.append(Check(n, Outcome.SKIPPED,
                                         f"not evaluated: {self.stopped[0].value} validation failed",
                                         enforced=False))


_ORDER = (CheckName.INTEGRITY, CheckName.AUTHENTICITY, CheckName.IDENTITY, CheckName.EXPIRY,
          CheckName.TIMESTAMP, CheckName.REVOCATION)


class NotationVerifier(Verifier):
    """Verifies notation signatures against notation's trust policy and trust store."""

    def __init__(self, policy: TrustPolicyDocument, stores: Mapping[tuple[str, str], NamedStore], *,
                 name: str = "notation", revocation: RevocationChecker | None = None,
                 max_signatures: int = 50, user_metadata: Mapping[str, str] | None = None) -> None:
        if policy.kind != "oci":
            raise ConfigError("a notation verifier needs an OCI trust policy (with registryScopes), "
                              "not a blob trust policy")
        for stmt in policy.statements:
            for key in stmt.trust_stores:
                if key not in stores:
                    raise ConfigError(f"trust policy statement {_q(stmt.name)} names trust store "
                                      f"{key[0]}:{key[1]}, which was not loaded")
        self._policy = policy
        self._stores = dict(stores)
        self._name = name
        self._revocation = revocation if revocation is not None else RevocationChecker(None)
        self._max = max_signatures
        self._user_metadata = dict(user_metadata or {})
        h = hashlib.sha256()
        h.update(json.dumps(policy.raw, sort_keys=True).encode())
        for key in sorted(self._stores):
            h.update(f"{key[0]}:{key[1]}".encode())
            for cert in self._stores[key].certificates:
                h.update(bytes.fromhex(fingerprint(cert)))
        h.update(json.dumps(sorted(self._user_metadata.items())).encode())
        h.update(f"max={max_signatures};net={self._revocation.fetcher is not None}".encode())
        self._fingerprint = h.hexdigest()
        self._store_certs = {key: sorted(fingerprint(c) for c in store.certificates)
                             for key, store in self._stores.items()}
        # Each store's certificates as the DER a chain is looked up in: trust material, encoded once
        # here rather than for every signature (issue 19).
        self._store_anchors = {key: trust_anchors(store.certificates) for key, store in self._stores.items()}

    # -- construction at the edge --------------------------------------------------------------

    @classmethod
    def from_spec(cls, spec: NotationVerifierSpec, *, base_dir: Path, fetcher: Fetcher | None,
                  max_signatures: int = 50, crl_cache: CRLCache | None = None,
                  user_metadata: Mapping[str, str] | None = None) -> NotationVerifier:
        policy_path = sources.resolve(sources.under(base_dir, spec.trust_policy))
        policy = load_trust_policy(policy_path)
        store_path = sources.resolve(sources.under(base_dir, spec.trust_store))
        needed = {key for s in policy.statements for key in s.trust_stores}
        stores: dict[tuple[str, str], NamedStore] = {}
        if sources.is_file(store_path):
            try:
                loaded = load_trust_store_crs(sources.read_bytes(store_path))
            except (TrustStoreError, TrustPolicyError, OSError) as exc:  # malformed YAML: TrustPolicyError
                raise ConfigError(str(exc), source=str(store_path)) from None
            stores = {(s.store_type, s.name): s for s in loaded}
            missing = sorted(needed - set(stores))
            if missing:
                raise ConfigError(f"the trust store {_q(missing[0][1])} of type {_q(missing[0][0])} does not exist",
                                  source=str(store_path))
        else:
            for typ, name in sorted(needed):
                try:
                    stores[(typ, name)] = load_named_store(store_path, typ, name)
                except TrustStoreError as exc:
                    raise ConfigError(str(exc), source=str(store_path / typ / name)) from None
                except OSError as exc:
                    raise ConfigError(f"cannot read trust store: {exc.strerror}",
                                      source=str(store_path / typ / name)) from None
        return cls(policy, stores, name=f"notation policy {policy_path.name}",
                   revocation=RevocationChecker(fetcher, crl_cache), max_signatures=max_signatures,
                   user_metadata=user_metadata)

    # -- Verifier protocol ---------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def wants(self) -> Wants:
        return Wants(referrer_types=frozenset({NOTATION_ARTIFACT_TYPE}))

    @property
    def trust_fingerprint(self) -> str:
        return self._fingerprint

    @property
    def policy(self) -> TrustPolicyDocument:
        return self._policy

    def decision_identity(self, image: RunningImage) -> str | None:
        """Per repository: the trust policy statement its registryScopes select (level, overrides,
        timestamp rule, trust stores, trusted identities), the certificates of the stores that
        statement names, revocation settings, required metadata and the signature bound. Two
        repositories that select the same statement share the identity; when none is selected the
        repository itself is named (the result says which repository had no statement)."""
        repo = image.reference.repo
        stmt = self._policy.statement_for(repo)
        r = self._revocation
        parts: dict[str, Any] = {
            "name": self._name,
            "max_signatures": self._max,
            "user_metadata": dict(sorted(self._user_metadata.items())),
            "revocation": {"network": r.fetcher is not None, "crl_max_bytes": r.crl_max_bytes,
                           "crl_timeout": r.crl_timeout, "ocsp_max_bytes": r.ocsp_max_bytes,
                           "ocsp_timeout": r.ocsp_timeout},
        }
        if stmt is None:
            parts["statement"] = None
            parts["repository"] = repo
        else:
            parts["statement"] = {
                "name": stmt.name,
                "level": stmt.level.value,
                "actions": {v.value: a.value for v, a in sorted(stmt.actions.items())},
                "verify_timestamp": stmt.verify_timestamp,
                "registry_scopes": list(stmt.registry_scopes),
                "trust_stores": [f"{t}:{n}" for t, n in stmt.trust_stores],
                "trusted_identities": list(stmt.trusted_identities),
            }
            parts["trust_store_certificates_sha256"] = {f"{t}:{n}": self._store_certs[(t, n)]
                                                        for t, n in stmt.trust_stores}
        return identity_of("notation", parts)

    def results_cacheable(self, results: tuple[SignatureResult, ...]) -> bool:
        """Results may be reused across scans only when no network answer went into them: no
        certificate in a chain names an OCSP responder or CRL (revocation is re-checked every scan
        otherwise), and no RFC 3161 timestamp was relied on (its TSA chain may be revocable)."""
        for r in results:
            if r.signed_at is not None and r.signed_at.source is TimeSource.TSA:
                return False
            certs = r.details.get("revocation") or ()
            if any(c.get("method") != "none" or c.get("status") == "unknown" for c in certs):
                return False
        return True

    def verify(self, image: RunningImage, material: SignatureMaterial,
               now: datetime) -> tuple[SignatureResult, ...]:
        repo = image.reference.repo
        stmt = self._policy.statement_for(repo)
        if stmt is None:
            return (SignatureResult(kind=KIND, verifier=self._name, outcome=Outcome.FAILED,
                                    failure=SignatureFailure.INVALID,
                                    reason=f"no applicable trust policy statement for {repo}"),)
        if stmt.level is Level.SKIP:
            return (SignatureResult(
                kind=KIND, verifier=self._name, outcome=Outcome.PASSED,
                reason=f"verification level skip: trust policy statement {_q(stmt.name)} is configured to skip "
                       "signature verification (Trust policy is configured to skip signature verification)",
                details={"trust_policy_statement": stmt.name, "level": stmt.level.value}),)
        sigs = [r for r in material.referrers if r.artifact_type == NOTATION_ARTIFACT_TYPE]
        out = [self.verify_signature(stmt, ref, material.image, now) for ref in sigs[: self._max]]
        return tuple(out)

    # -- one signature -------------------------------------------------------------------------

    def verify_signature(self, stmt: TrustPolicyStatement, ref: ReferrerArtifact, target: Descriptor,
                         now: datetime) -> SignatureResult:
        run = _Run(stmt)
        details: dict[str, Any] = {"trust_policy_statement": stmt.name, "level": stmt.level.value,
                                   "envelope_type": ref.blob_media_type,
                                   "signature_manifest": ref.manifest_digest}
        # 1. Integrity ----------------------------------------------------------------------------
        env: Envelope | None = None
        try:
            env = parse_envelope(ref.blob_media_type, ref.blob)
            env.verify_signature()
            validate_signing_chain(env.certificates)
        except (EnvelopeError, ParseError) as exc:
            problem: str | None = f"unable to parse or verify the digital signature: {exc}"
        except ChainError as exc:
            problem = f"the certificate chain is invalid: {exc}"
        else:
            problem = self._integrity_problems(env, ref, target)
        run.record(Validation.INTEGRITY, problem, passed_reason="signature and payload verified")
        if env is None or run.stopped:
            return self._result(run, env, details, now)
        chain = env.certificates
        leaf = chain[0]
        chain_der = [der(c) for c in chain]  # once a signature: its fingerprints and the trust lookup
        chain_subjects = [subject_string(c.subject) for c in chain]
        signer = chain_subjects[0]
        details.update({
            "signing_scheme": env.signing_scheme,
            "signature_algorithm": env.signature_algorithm,
            "chain_sha256": [hashlib.sha256(d).hexdigest() for d in chain_der],
            "chain_subjects": chain_subjects,
            "signing_time": env.signing_time.isoformat() if env.signing_time else None,
            "authentic_signing_time": (env.authentic_signing_time.isoformat()
                                       if env.authentic_signing_time else None),
            "expiry": env.expiry.isoformat() if env.expiry else None,
            "signing_agent": env.signing_agent,
            "user_metadata": dict(env.target.annotations),
            "timestamped": env.timestamp_token is not None,
        })
        # 2. Authenticity: trust store, then trusted identity ----------------------------------------
        store_type = "ca" if env.signing_scheme == SCHEME_X509 else "signingAuthority"
        names = stmt.stores_of(store_type)
        if not names:
            problem = (f"authenticity validation failed. the trust policy statement {_q(stmt.name)} has no trust "
                       f"store of type {_q(store_type)}, which signing scheme {env.signing_scheme} needs")
        elif not any(chain_trusted_by(chain_der, self._store_anchors[(store_type, n)]) for n in names):
            problem = ("authenticity validation failed. the signature's certificate chain does not contain any "
                       "trusted certificate")
        else:
            problem = None
        run.record(Validation.AUTHENTICITY, problem,
                   passed_reason=f"chain leads to trust store {store_type}:{','.join(names)}")
        if run.stopped:
            return self._result(run, env, details, now)
        id_problem = check_trusted_identities(stmt.trusted_identities, leaf)
        run.record(Validation.AUTHENTICITY,
                   None if id_problem is None else f"authenticity validation failed. {id_problem} defined in "
                                                   f"the trust policy {_q(stmt.name)}",
                   passed_reason=f"signer {_q(signer)} is a trusted identity",
                   name=CheckName.IDENTITY)
        if run.stopped:
            return self._result(run, env, details, now)
        # 3. Expiry ---------------------------------------------------------------------------------
        if env.expiry is not None and now >= env.expiry:
            problem = f"expiry validation failed. digital signature has expired on {_q(_fmt(env.expiry))}"
        else:
            problem = None
        run.record(Validation.EXPIRY, problem,
                   passed_reason=(f"signature expires {env.expiry.isoformat()}" if env.expiry
                                  else "signature has no expiry"))
        if run.stopped:
            return self._result(run, env, details, now)
        # 4. Authentic timestamp ----------------------------------------------------------------------
        ts_check: TimestampCheck | None = None
        if run.action(Validation.AUTHENTIC_TIMESTAMP) is not Action.SKIP:
            tsa_names = stmt.stores_of("tsa")
            tsa = [c for n in tsa_names for c in self._stores[("tsa", n)].certificates] if tsa_names else None
            tsa_revocation = None if run.action(Validation.REVOCATION) is Action.SKIP else self._revocation
            ts_check = check_authentic_timestamp(env, stmt, tsa, now, tsa_revocation)
            run.record(Validation.AUTHENTIC_TIMESTAMP,
                       None if ts_check.problem is None
                       else f"authenticTimestamp validation failed. {ts_check.problem}",
                       passed_reason=("RFC 3161 timestamp verified" if ts_check.timestamp
                                      else "certificate chain valid at the verification time"),
                       error=ts_check.error)
        else:
            run.record(Validation.AUTHENTIC_TIMESTAMP, None)
        if ts_check is not None and ts_check.timestamp is not None:
            ts = ts_check.timestamp
            details["timestamp"] = {"gen_time": ts.gen_time.isoformat(), "accuracy_seconds":
                                    ts.accuracy.total_seconds(), "tsa_chain_sha256": [fingerprint(c) for c in
                                                                                      ts.tsa_chain]}
        signed_at = _signing_time(env, ts_check, _authentic_chain(run))
        if run.stopped:
            return self._result(run, env, details, now, ts_check)
        # 5. Revocation -----------------------------------------------------------------------------
        if run.action(Validation.REVOCATION) is not Action.SKIP:
            untrusted = None if _authentic_chain(run) else "the certificate chain does not lead to the trust store"
            rr = self._revocation.check_chain(chain, now, _revocation_time(signed_at), untrusted=untrusted)
            details["revocation"] = [{"subject": c.subject, "status": c.status.value, "method": c.method,
                                      "reason": c.reason} for c in rr.certificates]
            if rr.status is RevocationStatus.REVOKED:
                run.record(Validation.REVOCATION, f"revocation validation failed. signing certificate chain: "
                                                  f"{rr.reason}")
            elif rr.status is RevocationStatus.UNKNOWN:
                run.record(Validation.REVOCATION, f"revocation validation failed. {rr.reason}", error=True)
            else:
                run.record(Validation.REVOCATION, None, passed_reason=rr.reason)
        else:
            run.record(Validation.REVOCATION, None)
        return self._result(run, env, details, now, ts_check)

    def _integrity_problems(self, env: Envelope, ref: ReferrerArtifact, target: Descriptor) -> str | None:
        if env.verification_plugin is not None:
            return (f"the signature requires verification plugin {_q(env.verification_plugin)}, which sigaudit "
                    "does not run")
        if env.unknown_critical:
            return f"the signature has unsupported critical headers {list(env.unknown_critical)}"
        t = env.target
        if (t.media_type, t.digest, t.size) != (target.media_type, target.digest, target.size):
            return ("integrity check failed. signature does not match the given artifact: payload targets "
                    f"{t.digest} ({t.media_type}, {t.size} bytes), the image is {target.digest} "
                    f"({target.media_type}, {target.size} bytes)")
        if ref.subject is not None and ref.subject.digest != target.digest:
            return f"the signature manifest's subject is {ref.subject.digest}, not the image {target.digest}"
        for key, value in self._user_metadata.items():
            if t.annotations.get(key) != value:
                return (f"unable to find specified metadata {key}={_q(value)} in the signature payload "
                        "annotations")
        return None

    def _result(self, run: _Run, env: Envelope | None, details: dict[str, Any], now: datetime,
                ts_check: TimestampCheck | None = None) -> SignatureResult:
        if run.stopped:
            run.skip_rest(_ORDER)
        checks = tuple(sorted(run.checks, key=lambda c: _ORDER.index(c.name) if c.name in _ORDER else 99))
        leaf = env.certificates[0] if env is not None else None
        signer = subject_string(leaf.subject) if leaf is not None else ""
        signed_at = _signing_time(env, ts_check, _authentic_chain(run)) if env is not None else None
        not_after = None
        if env is not None:
            candidates = [c.not_valid_after_utc for c in env.certificates]
            if env.expiry is not None:
                candidates.append(env.expiry)
            not_after = min(candidates)
        if run.stopped is None:
            outcome, failure = Outcome.PASSED, SignatureFailure.NONE
            reason = (f"notation signature verified by trust policy statement {_q(run.statement.name)} "
                      f"(level {run.statement.level.value})")
            if run.logged:
                reason += "; logged: " + "; ".join(run.logged)
        else:
            v, problem, error = run.stopped
            reason = problem if "validation failed" in problem else f"{v.value} validation failed. {problem}"
            if run.logged:
                reason += "; also logged: " + "; ".join(run.logged)
            if error:
                outcome, failure = Outcome.ERROR, SignatureFailure.ERROR
            elif v is Validation.REVOCATION:
                outcome, failure = Outcome.FAILED, SignatureFailure.REVOKED
            elif v is Validation.EXPIRY or (v is Validation.AUTHENTIC_TIMESTAMP and ts_check is not None
                                            and ts_check.expired_certificate):
                outcome, failure = Outcome.FAILED, SignatureFailure.EXPIRED
            else:
                outcome, failure = Outcome.FAILED, SignatureFailure.INVALID
        return SignatureResult(
            kind=KIND, verifier=self._name, outcome=outcome, reason=reason, failure=failure,
            signer=signer, key_sha256=spki_sha256(leaf) if leaf is not None else None,
            identity=signer or None,
            issuer=subject_string(leaf.issuer) if leaf is not None else None,
            signed_at=signed_at, not_after=not_after, checks=checks, details=details,
        )


def _authentic_chain(run: _Run) -> bool:
    """Whether the signature's chain led to the trust store (not merely logged as failing)."""
    return any(c.name is CheckName.AUTHENTICITY and c.outcome is Outcome.PASSED for c in run.checks)


def _revocation_time(signed_at: SignedTime | None) -> datetime | None:
    """The time that may excuse a CRL/OCSP invalidityDate on the *signing* chain: only the signing
    authority's authenticSigningTime, as notation-go's ``verifyRevocation`` (verifier/verifier.go)
    passes ``AuthenticSigningTime`` only for the ``notary.x509.signingAuthority`` scheme. An RFC 3161
    genTime is not: notation-go gives the signing chain no time for ``notary.x509``, and a key said
    invalid from a date stays revoked however early a TSA says the signature was made."""
    if signed_at is not None and signed_at.source is TimeSource.SIGNING_AUTHORITY:
        return signed_at.value
    return None


def _signing_time(env: Envelope, ts_check: TimestampCheck | None, authentic_chain: bool) -> SignedTime | None:
    """The signing time and its source: a verified RFC 3161 countersignature, else the signing
    authority's authenticSigningTime (only when its chain leads to the signingAuthority trust store:
    under a level that merely logs authenticity, an untrusted "authority" vouches for nothing), else
    the signer's own, unauthenticated, signingTime claim."""
    if ts_check is not None and ts_check.timestamp is not None and ts_check.problem is None:
        return SignedTime(ts_check.timestamp.gen_time, TimeSource.TSA)
    if env.authentic_signing_time is not None:
        return SignedTime(env.authentic_signing_time,
                          TimeSource.SIGNING_AUTHORITY if authentic_chain else TimeSource.CLAIMED)
    if env.signing_time is not None:
        return SignedTime(env.signing_time, TimeSource.CLAIMED)
    return None

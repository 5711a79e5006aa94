"""The ``notation`` verifier kind: notation's own trust policy and trust store, read at load."""

from __future__ import annotations

from pydantic import Field

from scanner.verify import sources
from scanner.verify.base import Verifier
from scanner.verify.kinds.base import Kind, StrictSpec, Trust


class NotationVerifierSpec(StrictSpec):
    trust_policy: str = Field(alias="trustPolicy")  # trustpolicy.json (notation's own format)
    trust_store: str = Field(alias="trustStore")  # directory: x509/{ca,signingAuthority,tsa}/<name>/


def build(spec: NotationVerifierSpec, trust: Trust) -> Verifier:
    from scanner.verify.notation import NotationVerifier

    try:
        for f in (spec.trust_policy, spec.trust_store):
            p = sources.under(trust.base_dir, f).expanduser()
            if sources.is_file(p):
                trust.add_material(sources.read_bytes(p))
    except OSError:
        pass
    return NotationVerifier.from_spec(
        spec, base_dir=trust.base_dir, fetcher=trust.fetcher(), crl_cache=trust.crl_cache()
    )


KIND = Kind("notation", NotationVerifierSpec, build)

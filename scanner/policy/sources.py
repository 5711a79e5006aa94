"""Where policies come from: the native AuditPolicy file, plus imports of policies users already have."""

from __future__ import annotations

from collections.abc import Sequence

from scanner.errors import ConfigError
from scanner.policy.loader import Policy, PolicyLoader, load_policy


def load_policies(
    policy_path: str | None, policy_from: Sequence[str], *, kubeconfig: str | None = None, context: str | None = None,
    deadline: float | None = None,
) -> Policy:
    """The native policy file and any ``--policy-from`` imports, merged (native rules first). ``deadline``
    (a ``time.monotonic()`` value: the command's ``--deadline``) ends every remote read of the load there
    (key URLs, KMS keys, the Kubernetes API): DeadlineReached (exit 3) naming what was being read."""
    if not policy_path and not policy_from:
        raise ConfigError("no policy: give --policy FILE (an AuditPolicy) or --policy-from SOURCE")
    from scanner.sources.deadline import policy_load  # the edge, lazily: importing the policy layer loads none

    # The one place a policy load gets its deadline: every remote read in it (key URLs, KMS keys, the trust
    # root, cluster reads) goes through scanner.verify.sources.fetched, which ends it there.
    with policy_load(deadline):
        return _load(policy_path, policy_from, kubeconfig=kubeconfig, context=context, deadline=deadline)


def _load(
    policy_path: str | None, policy_from: Sequence[str], *, kubeconfig: str | None, context: str | None,
    deadline: float | None,
) -> Policy:
    loader = PolicyLoader()
    policy = load_policy(policy_path, loader=loader) if policy_path else None
    if policy_from:
        from scanner.policy.imports import merge

        return merge(policy, policy_from, loader=loader, kubeconfig=kubeconfig, context=context,
                     deadline=deadline)
    assert policy is not None
    return policy

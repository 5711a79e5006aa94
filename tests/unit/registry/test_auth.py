"""Registry credentials stay with their owner: a pod gets its own pull secrets and the scanner's own
credentials, in the kubelet's order, never another namespace's. A malformed docker config.json is a
configuration error (exit 2); one tenant's malformed pull secret is ignored with a warning; neither crashes."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from scanner.errors import ConfigError
from scanner.registry.auth import CredentialStore, parse_docker_config

HOST = "registry.example:5000"
REPO = "app"


def _config(user: str, password: str, host: str = HOST) -> bytes:
    return json.dumps({"auths": {host: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}}).encode()


def _store() -> CredentialStore:
    store = CredentialStore(parse_docker_config(_config("scanner", "own"), "config.json"))
    store.add_pull_secret("team-a", "regcred", _config("alice", "a"))
    store.add_pull_secret("team-a", "other", _config("carol", "c", "elsewhere.example"))
    store.add_pull_secret("team-b", "regcred", _config("bob", "b"))
    store.add_pull_secret("team-c", "copy", _config("alice", "a"))
    return store


def test_a_pod_gets_its_own_secrets_then_the_scanners_never_another_namespaces() -> None:
    store = _store()
    users = [c.username for c in store.candidates(HOST, (("team-a", "other"), ("team-a", "regcred")), repository=REPO)]
    assert users == ["alice", "scanner"]
    assert [c.username for c in store.candidates(HOST, (("team-b", "regcred"),), repository=REPO)] == ["bob", "scanner"]
    assert [c.username for c in store.candidates(HOST, (), repository=REPO)] == ["scanner"]  # no secret: never team-a's
    assert store.candidates("elsewhere.example", (("team-b", "regcred"),), repository=REPO) == ()  # anonymous
    missing = store.candidates(HOST, (("team-b", "missing"),), repository=REPO)
    assert missing == store.candidates(HOST, (), repository=REPO)


def test_equal_credentials_in_two_namespaces_are_one_credential_set() -> None:
    store = _store()
    team_a = store.candidates(HOST, (("team-a", "regcred"),), repository=REPO)
    assert team_a == store.candidates(HOST, (("team-c", "copy"),), repository=REPO)
    assert team_a != store.candidates(HOST, (("team-b", "regcred"),), repository=REPO)


def test_describe_names_secrets_never_their_contents() -> None:
    store = _store()
    text = store.describe(HOST, (("team-a", "other"), ("team-a", "regcred")), repository=REPO)
    assert text == "pull secret team-a/regcred, the scanner's docker config"
    assert "alice" not in text and CredentialStore().describe(HOST, repository=REPO) == "no credentials (anonymous)"


GOOD = base64.b64encode(b"user:pa55").decode()


@pytest.mark.parametrize("field", ["auth", "username", "password", "identitytoken"])
@pytest.mark.parametrize("value", [12345, ["dXNlcjpw"], {"a": 1}, True, 1.5])
def test_a_non_string_field_is_a_config_error(field: str, value: Any) -> None:
    entry: dict[str, Any] = {"auth": GOOD, field: value}
    with pytest.raises(ConfigError, match=rf"auths\['r.io'\]\.{field} is a \w+, not a string") as info:
        parse_docker_config(json.dumps({"auths": {"r.io": entry}}).encode(), "config.json")
    assert "pa55" not in str(info.value) and GOOD not in str(info.value)


def test_string_fields_still_work() -> None:
    creds = dict(parse_docker_config(json.dumps({"auths": {
        "https://r.io/v1/": {"auth": GOOD}, "q.io": {"username": "u", "password": "p"},
        "t.io": {"identitytoken": "tok"}, "skip.io": "not an object"}}).encode(), "c"))
    assert (creds["r.io"].username, creds["r.io"].password) == ("user", "pa55")
    assert creds["q.io"].password == "p" and creds["t.io"].identity_token == "tok" and "skip.io" not in creds


def test_docker_config_with_a_non_string_auth_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": {"r.io": {"auth": 12345}}}))
    with pytest.raises(ConfigError, match=r"config\.json"):
        CredentialStore.from_docker_config(path)


def test_an_unreadable_docker_config_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").mkdir()  # exists, cannot be read as a file
    with pytest.raises(ConfigError, match="cannot read docker config"):
        CredentialStore.from_docker_config(tmp_path / "config.json")


def test_one_tenants_malformed_pull_secret_is_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    store = CredentialStore(parse_docker_config(json.dumps({"auths": {"r.io": {"auth": GOOD}}}).encode(), "c"))
    caplog.set_level(logging.WARNING)
    store.add_pull_secret("tenant-a", "broken", json.dumps({"auths": {"r.io": {"auth": 12345}}}).encode())
    store.add_pull_secret("tenant-b", "fine", json.dumps({"auths": {"r.io": {"username": "b", "password": "x"}}})
                          .encode())
    assert any("tenant-a/broken" in r.getMessage() and "not a string" in r.getMessage() for r in caplog.records)
    # the scanner's own config only, as the kubelet would
    assert [c.username for c in store.candidates("r.io", (("tenant-a", "broken"),), repository=REPO)] == ["user"]
    assert [c.username for c in store.candidates("r.io", (("tenant-b", "fine"),), repository=REPO)] == ["b", "user"]


# -- credential helpers and cloud providers (issue #21) -------------------------------------------

from scanner.registry.auth import (  # noqa: E402
    Credential,
    CredentialUnavailable,
    DeferredCredential,
    RegistryAuthConfig,
    parse_helper_config,
)


def _helper_config(**doc: Any) -> bytes:
    return json.dumps(doc).encode()


def _resolvers(calls: list[DeferredCredential], answers: dict[str, Any]) -> dict[str, Any]:
    def resolve(c: DeferredCredential) -> tuple[Credential | None, float]:
        calls.append(c)
        answer = answers[c.kind]
        if isinstance(answer, Exception):
            raise answer
        return answer, 1e12

    return {k: resolve for k in ("helper", "ecr", "gcr", "acr")}


def test_kubelet_order_pull_secrets_then_docker_config_or_its_helper_then_cloud_provider() -> None:
    data = _helper_config(auths={HOST: {"auth": base64.b64encode(b"scanner:own").decode()}},
                          credHelpers={"123456789012.dkr.ecr.eu-west-1.amazonaws.com": "ecr-login"})
    auth = RegistryAuthConfig.parse(["helpers,ecr", "gcr=" + HOST])
    store = CredentialStore(parse_docker_config(data, "c"), helpers=parse_helper_config(data, "c"), auth=auth)
    store.add_pull_secret("team-a", "regcred", _config("alice", "a"))
    got = store.candidates(HOST, (("team-a", "regcred"),), repository=REPO)
    assert [getattr(c, "username", None) or c.label for c in got] == [  # type: ignore[union-attr]
        "alice", "scanner", "Google Artifact Registry/GCR (application default credentials)"]
    ecr = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    assert store.candidates(ecr, repository=REPO) == (DeferredCredential("helper", "ecr-login", ecr),
                                     DeferredCredential("ecr", "ecr", ecr))
    assert store.candidates("docker.io", repository=REPO) == ()  # no source for a host none is named for
    assert store.describe(ecr, repository=REPO) == ("credential helper docker-credential-ecr-login, "
                                   "Amazon ECR (AWS default credential chain)")


def test_creds_store_answers_for_every_host_instead_of_auths_as_docker_does() -> None:
    data = _helper_config(auths={HOST: {"auth": base64.b64encode(b"scanner:own").decode()}},
                          credsStore="desktop", credHelpers={"other.example": "pass"})
    store = CredentialStore(parse_docker_config(data, "c"), helpers=parse_helper_config(data, "c"),
                            auth=RegistryAuthConfig(helpers=True))
    assert store.candidates(HOST, repository=REPO) == (DeferredCredential("helper", "desktop", HOST),)
    other = DeferredCredential("helper", "pass", "other.example")
    assert store.candidates("other.example", repository=REPO) == (other,)


def test_helpers_are_not_run_unless_enabled(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(_helper_config(credsStore="desktop"))
    with caplog.at_level(logging.WARNING):
        store = CredentialStore.from_docker_config(path)
    assert store.candidates(HOST, repository=REPO) == () and "--registry-auth helpers" in caplog.text
    with_helpers = CredentialStore.from_docker_config(path, RegistryAuthConfig(helpers=True))
    assert with_helpers.candidates(HOST, repository=REPO) == (
        DeferredCredential("helper", "desktop", HOST),)


def test_a_pull_secret_never_names_a_program_the_scanner_runs() -> None:
    """A tenant's dockerconfigjson with credHelpers/credsStore: only its ``auths`` are read (as the kubelet)."""
    store = CredentialStore(auth=RegistryAuthConfig(helpers=True))
    store.add_pull_secret("team-a", "evil", _helper_config(credsStore="evil", credHelpers={HOST: "evil"}))
    assert store.candidates(HOST, (("team-a", "evil"),), repository=REPO) == ()


@pytest.mark.parametrize("doc", [{"credsStore": "../../bin/sh"}, {"credHelpers": {HOST: "/usr/bin/id"}},
                                 {"credHelpers": {HOST: 7}}, {"credHelpers": ["x"]}, {"credsStore": "a b"}])
def test_a_helper_name_that_is_not_a_plain_name_is_a_config_error(doc: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(json.dumps(doc).encode())
    with pytest.raises(ConfigError):
        CredentialStore.from_docker_config(path, RegistryAuthConfig(helpers=True))


@pytest.mark.parametrize("value", [["s3"], ["ecr=", "x"], ["ecr=a b"], ["ecr=h", "gcr=h"], ["none,ecr"], ["helpers=x"]])
def test_registry_auth_refuses_what_it_does_not_know(value: list[str]) -> None:
    with pytest.raises(ConfigError):
        RegistryAuthConfig.parse(value)


def test_registry_auth_names_a_provider_for_a_host_that_is_not_the_clouds() -> None:
    auth = RegistryAuthConfig.parse(["ECR=HTTPS://127.0.0.1:5000/", "acr"])
    assert auth.provider_for("127.0.0.1:5000") == "ecr"
    assert auth.provider_for("123456789012.dkr.ecr.us-east-1.amazonaws.com") == "ecr"
    assert auth.provider_for("registry1.azurecr.io") == "acr" and auth.provider_for("gcr.io") is None
    assert RegistryAuthConfig.parse(["none"]) == RegistryAuthConfig()


def test_a_source_runs_once_its_failure_is_remembered_and_named() -> None:
    calls: list[DeferredCredential] = []
    store = CredentialStore(auth=RegistryAuthConfig.parse(["ecr=" + HOST, "gcr=other.example"]),
                            resolvers=_resolvers(calls, {"ecr": Credential("AWS", "p"),
                                                         "gcr": CredentialUnavailable("gcp: no metadata server")}))
    (ecr,) = store.candidates(HOST, repository=REPO)
    assert store.resolve(ecr) == Credential("AWS", "p") and store.resolve(ecr) == Credential("AWS", "p")
    (gcr,) = store.candidates("other.example", repository=REPO)
    for _ in range(2):
        with pytest.raises(CredentialUnavailable, match="no metadata server"):
            store.resolve(gcr)
    assert calls == [ecr, gcr]


def test_a_source_that_crashes_is_its_failure_never_the_scans() -> None:
    store = CredentialStore(auth=RegistryAuthConfig.parse(["acr=" + HOST]),
                            resolvers=_resolvers([], {"acr": KeyError("Secret-in-key")}))
    with pytest.raises(CredentialUnavailable, match=r"failed: KeyError$"):
        store.resolve(store.candidates(HOST, repository=REPO)[0])


def test_a_credential_is_asked_again_shortly_before_it_expires() -> None:
    now = [1000.0]
    answers = iter([(Credential("AWS", "first"), 2000.0), (Credential("AWS", "second"), 9000.0)])
    store = CredentialStore(auth=RegistryAuthConfig.parse(["ecr=" + HOST]),
                            resolvers={"ecr": lambda c: next(answers)}, clock=lambda: now[0])
    (ecr,) = store.candidates(HOST, repository=REPO)
    assert store.resolve(ecr).password == "first"  # type: ignore[union-attr]
    now[0] = 2000.0
    assert store.resolve(ecr).password == "second"  # type: ignore[union-attr]


# -- a source that never answers is bounded by the scan's deadline ---------------------------------


def test_a_source_that_never_answers_is_abandoned_at_the_scans_deadline() -> None:
    """A cloud SDK waiting on a token endpoint that never answers (its own timeouts and retries are
    out of our reach) is given up at the deadline in force on the calling thread, named, and the
    failure is remembered like any other; the SDK's late answer is dropped."""
    import threading
    import time

    from scanner.registry import deadline
    from scanner.registry.auth import (
        Credential,
        CredentialUnavailable,
        RegistryAuthConfig,
    )

    release = threading.Event()
    calls: list[float | None] = []

    def hangs(c: DeferredCredential) -> tuple[Credential | None, float]:
        calls.append(deadline.remaining())  # the worker runs under the caller's deadline
        release.wait(30)
        return Credential("AWS", "late-token"), 1e12

    store = CredentialStore(auth=RegistryAuthConfig.parse(["ecr=evil.test"]), resolvers={"ecr": hangs})
    (candidate,) = store.candidates("evil.test", repository=REPO)
    started = time.monotonic()
    try:
        words = r"Amazon ECR.*no answer within 1\.[45] s \(scan deadline reached\)"
        with deadline.within(time.monotonic() + 1.0, "scan deadline reached"), \
                pytest.raises(CredentialUnavailable, match=words):
            store.resolve(candidate)
        assert time.monotonic() - started < 3
        assert calls and calls[0] is not None and 0 < calls[0] <= 1.0
        with pytest.raises(CredentialUnavailable):  # remembered: not asked again at once
            store.resolve(candidate)
        assert len(calls) == 1
    finally:
        release.set()


def test_a_deadline_already_passed_asks_no_source() -> None:
    import time

    from scanner.registry import deadline
    from scanner.registry.auth import CredentialUnavailable, RegistryAuthConfig

    asked: list[DeferredCredential] = []
    store = CredentialStore(auth=RegistryAuthConfig.parse(["gcr=evil.test"]),
                            resolvers={"gcr": lambda c: (asked.append(c), (None, 1e12))[1]})
    (candidate,) = store.candidates("evil.test", repository=REPO)
    with deadline.within(time.monotonic() - 1, "scan deadline reached"), \
            pytest.raises(CredentialUnavailable, match="not asked: scan deadline reached"):
        store.resolve(candidate)
    assert asked == []


# Path-scoped keys (``reg.io/team-a``), matched as the kubelet matches them (``BasicDockerKeyring``):
# the host (its glob, its port) and the key's path a prefix of the image's repository, most specific
# first, every matching key tried in turn. One secret's team-b entry is never team-a's credential.


def _auths(entries: dict[str, str]) -> bytes:
    return json.dumps({"auths": {k: {"auth": base64.b64encode(f"{u}:pw-{u}".encode()).decode()}
                                 for k, u in entries.items()}}).encode()


def _users(store: CredentialStore, image: str, secrets: tuple[tuple[str, str], ...] = (("ns", "s"),)) -> list[str]:
    registry, _, repository = image.partition("/")
    return [c.username for c in store.candidates(registry, secrets, repository=repository)]  # type: ignore[union-attr]


def test_path_keys_of_one_secret_stay_with_their_path() -> None:
    store = CredentialStore()
    store.add_pull_secret("ns", "s", _auths({"reg.io/team-a": "alice", "reg.io/team-b": "bob", "reg.io": "carol"}))
    assert _users(store, "reg.io/team-a/app") == ["alice", "carol"]
    assert _users(store, "reg.io/team-b/app") == ["bob", "carol"]
    assert _users(store, "reg.io/team-c/app") == ["carol"]
    assert _users(store, "other.io/team-a/app") == []
    assert store.describe("reg.io", (("ns", "s"),), repository="team-a/app") == "pull secret ns/s"


def test_path_keys_across_a_pods_secrets_and_the_scanners_most_specific_first() -> None:
    """The kubelet merges a pod's secrets into one keyring: the most specific key of any secret first,
    equally specific ones in the pod's order; the node's (here: the scanner's) own after them."""
    store = CredentialStore(parse_docker_config(_auths({"reg.io": "own", "reg.io/team-a/app": "own-app"}), "c"))
    store.add_pull_secret("ns", "host", _auths({"reg.io": "carol"}))
    store.add_pull_secret("ns", "team", _auths({"reg.io/team-a": "alice", "reg.io/team-b": "bob"}))
    store.add_pull_secret("ns", "app", _auths({"reg.io/team-a/app": "dave"}))
    store.add_pull_secret("ns", "also", _auths({"https://reg.io/v2/team-a/": "erin"}))
    pod = (("ns", "host"), ("ns", "team"), ("ns", "app"), ("ns", "also"))
    assert _users(store, "reg.io/team-a/app", pod) == ["dave", "alice", "erin", "carol", "own-app", "own"]
    assert _users(store, "reg.io/team-b/app", pod) == ["bob", "carol", "own"]
    assert _users(store, "reg.io/team-a/app", ()) == ["own-app", "own"]
    first = store.candidates("reg.io", pod, repository="team-b/app")[0]
    assert store.label("reg.io", pod, first, repository="team-b/app") == "pull secret ns/team"


@pytest.mark.parametrize(("key", "image", "matches"), [
    ("reg.io/team", "reg.io/team-a/app", False),  # a prefix, but not on a `/` boundary
    ("reg.io/team", "reg.io/team/app", True),
    ("reg.io/team/app", "reg.io/team/app", True),
    ("reg.io/team/app", "reg.io/team/application", False),
    ("reg.io/", "reg.io/x/app", True),
    ("https://reg.io/v1/", "reg.io/x/app", True),
    ("http://reg.io/v2/team-a/", "reg.io/team-a/app", True),
    ("https://reg.io/v2/team-a", "reg.io/team-b/app", False),
    ("REG.IO/team-a", "reg.io/team-a/app", True),  # host names are case-insensitive
    ("HTTPS://Reg.Io", "reg.io/x", True),
    ("reg.io/TEAM-A", "reg.io/team-a/app", False),  # paths are not
    ("reg.io:5000/team-a", "reg.io:5000/team-a/app", True),
    ("reg.io:5000", "reg.io/x", False),
    ("reg.io", "reg.io:5000/x", False),
    ("reg.io:5000", "reg.io:5001/x", False),
    ("*.reg.io", "a.reg.io/x", True),
    ("*.reg.io", "reg.io/x", False),
    ("*.reg.io", "a.b.reg.io/x", False),
    ("*.reg.io/team-a", "a.reg.io/team-b/x", False),
    ("*.reg.io/team-a", "a.reg.io/team-a/x", True),
    ("*.reg.io", "a.evil.io/x", False),
    ("reg.*", "reg.io/x", True),
    ("*", "reg.io/x", False),
    ("[a-c].reg.io", "b.reg.io/x", True),
    ("[^a].reg.io", "a.reg.io/x", False),
    ("[.reg.io", "[.reg.io/x", False),  # a malformed glob matches nothing
    ("other.io/team-a", "reg.io/team-a/app", False),  # a path key for another host
    ("reg.io.evil.io/team-a", "reg.io/team-a/app", False),
    ("reg.io/team-b/../team-a", "reg.io/team-a/app", True),  # cleaned, as the kubelet cleans it
    ("reg.io/team-b/../team-a", "reg.io/team-b/app", False),
    ("reg.io/../../team-a", "reg.io/team-a/x", True),
    ("reg.io//team-a/./", "reg.io/team-a/x", True),
    ("reg.io/team-a?x=team-b", "reg.io/team-a/x", True),
    ("reg.io/team-a#", "reg.io/team-b/x", False),
    ("reg.io/team-%61", "reg.io/team-a/x", True),  # a URL path, decoded
    ("user@reg.io/team-a", "reg.io/team-a/x", True),
    ("evil.io@reg.io", "evil.io/x", False),
    ("docker.io/library", "docker.io/library/nginx", True),
    ("index.docker.io/library", "docker.io/library/nginx", True),
    ("https://index.docker.io/v1/", "docker.io/library/nginx", True),
    ("docker.io/team-a", "docker.io/team-b/app", False),
])
def test_which_keys_are_for_an_image(key: str, image: str, matches: bool) -> None:
    store = CredentialStore()
    store.add_pull_secret("ns", "s", _auths({key: "u"}))
    assert _users(store, image) == (["u"] if matches else [])


def test_a_provider_host_with_a_path_is_refused_never_widened_to_the_host() -> None:
    assert RegistryAuthConfig.parse(["ecr=Mirror:5000/"]).hosts == {"mirror:5000": "ecr"}
    with pytest.raises(ConfigError, match="is not a registry host"):
        RegistryAuthConfig.parse(["ecr=mirror:5000/team-a"])


def test_a_helper_named_for_a_path_is_not_the_hosts_helper() -> None:
    """docker looks ``credHelpers`` up by host name only: a key with a path never names the host's helper."""
    from scanner.registry.auth import parse_helper_config

    data = json.dumps({"credHelpers": {"reg.io/team-a": "team-a", "REG.io": "host"}}).encode()
    assert parse_helper_config(data, "c").helper_for("reg.io") == "host"
    data = json.dumps({"credHelpers": {"reg.io/team-a": "team-a"}}).encode()
    assert parse_helper_config(data, "c").helper_for("reg.io") is None


def test_ipv6_hosts_and_ports() -> None:
    store = CredentialStore()
    store.add_pull_secret("ns", "s", _auths({"[::1]:5000/team-a": "u", "[::1]": "v"}))
    assert _users(store, "[::1]:5000/team-a/app") == ["u"]
    assert _users(store, "[::1]:5000/team-b/app") == []
    assert _users(store, "[::1]/team-b/app") == ["v"]


def test_two_spellings_of_one_key_are_two_credentials_both_tried() -> None:
    """The kubelet keeps both entries of ``reg.io`` and ``https://reg.io/v1/``: neither is dropped."""
    store = CredentialStore(parse_docker_config(_auths({"reg.io": "own-1", "https://reg.io/v1/": "own-2"}), "c"))
    store.add_pull_secret("ns", "s", _auths({"reg.io/team-a": "a1", "https://reg.io/v2/team-a/": "a2"}))
    assert _users(store, "reg.io/team-a/app") == ["a1", "a2", "own-1", "own-2"]


@pytest.mark.parametrize(("key", "image", "matches"), [
    ("[z-a].reg.io", "b.reg.io/x", False),  # a reversed range matches nothing (as in Go), never raises
    ("[a-ca-z]x.reg.io", "kx.reg.io/x", True),
    ("[^z-a]x.reg.io", "kx.reg.io/x", True),
    ("[a-c", "b/x", False),
    ("\\*.reg.io", "a.reg.io/x", False),  # an escaped star is a star
    ("a\\", "a/x", False),
    ("*?", "a.reg.io/x", False),
])
def test_odd_globs_match_as_go_does_and_never_raise(key: str, image: str, matches: bool) -> None:
    store = CredentialStore()
    store.add_pull_secret("ns", "s", _auths({key: "u"}))
    assert _users(store, image) == (["u"] if matches else [])


def test_a_pathological_glob_is_matched_in_bounded_time() -> None:
    """A tenant's key ``*a*a…*c`` beside its own pod's image ``aaa…`` once took exponential time in a
    backtracking regular expression (holding the GIL: the whole scan hung, past every deadline)."""
    import time

    store = CredentialStore()
    store.add_pull_secret("ns", "s", _auths({"*a" * 12 + "*c.io": "u", "*" * 5000 + "c.io": "v",
                                             "[a-z]" * 3000 + ".io": "w"}))
    started = time.monotonic()
    assert _users(store, "a" * 30 + ".io/x") == []
    assert _users(store, "a" * 4000 + ".io/x") == []
    assert time.monotonic() - started < 2


def test_a_secret_with_tens_of_thousands_of_keys_is_searched_once_per_image() -> None:
    """Every registry request asks for its candidates: a tenant's 1 MB secret (20 000 keys) once cost a
    scan of all of them per request, for every image of that tenant."""
    import time

    keys = {f"reg{i}.io/team-{i}": "u" for i in range(20_000)}
    store = CredentialStore(parse_docker_config(_auths(keys), "c"))
    store.add_pull_secret("ns", "s", _auths(keys))
    started = time.monotonic()
    for _ in range(300):
        assert _users(store, "reg5.io/team-5/app") == ["u"]
    assert time.monotonic() - started < 3


def test_a_pull_secret_added_later_is_seen_by_the_next_lookup() -> None:
    store = CredentialStore(parse_docker_config(_auths({"reg.io": "own"}), "c"))
    assert _users(store, "reg.io/team-a/app") == ["own"]
    store.add_pull_secret("ns", "s", _auths({"reg.io/team-a": "a"}))
    assert _users(store, "reg.io/team-a/app") == ["a", "own"]
    store.add_pull_secret("ns", "s", _auths({"reg.io/team-b": "b"}))
    assert _users(store, "reg.io/team-a/app") == ["own"]


@pytest.mark.parametrize("key", ["reg.io\\@evil.io", "https://reg.io\\@evil.io/team-a", "reg.io/\\@evil.io",
                                 "a b@evil.io", "reg.io\\@evil.io:5000"])
def test_a_key_that_is_not_a_url_never_sends_its_credential_to_the_host_after_a_backslash(key: str) -> None:
    """``reg.io\\@evil.io`` reads as reg.io (a browser, a reviewer): Go's url.Parse, hence the kubelet,
    refuses it (a backslash is no userinfo); sigaudit once sent its credential to evil.io."""
    store = CredentialStore()
    store.add_pull_secret("ns", "s", _auths({key: "u", "user@reg.io": "ok"}))
    assert _users(store, "evil.io/team-a/app") == []
    assert _users(store, "evil.io:5000/team-a/app") == []
    assert _users(store, "reg.io/team-a/app") == ["ok"]


def test_candidates_are_found_once_per_image_and_secrets_and_a_new_secret_is_seen(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19: every registry request asks for its candidates (three times a request on a cold scan);
    the answer is worked out once per (registry, repository, pull secrets), never served to other
    secrets, another repository or host, and a pull secret added later is in the next answer."""
    store = _store()
    calls = [0]
    real = store._own

    def counted(registry: str, repository: str) -> Any:
        calls[0] += 1
        return real(registry, repository)

    monkeypatch.setattr(store, "_own", counted)
    team_a = (("team-a", "regcred"),)
    first = store.candidates(HOST, team_a, repository=REPO)
    for _ in range(5):
        assert store.candidates(HOST, team_a, repository=REPO) == first
    assert calls[0] == 1
    team_b = store.candidates(HOST, (("team-b", "regcred"),), repository=REPO)
    assert [getattr(c, "username", None) for c in team_b] == ["bob", "scanner"]
    assert store.candidates("elsewhere.example", team_a, repository=REPO) == ()
    store.add_pull_secret("team-a", "regcred", _config("dave", "d"))  # the secret changed (a watch re-read it)
    renewed = store.candidates(HOST, team_a, repository=REPO)
    assert [getattr(c, "username", None) for c in renewed] == ["dave", "scanner"]


# -- a credential source runs through deadline.run: its two protections hold for every source ------


@pytest.mark.parametrize("exc", [SystemExit(0), KeyboardInterrupt()])
def test_a_source_ending_with_system_exit_is_its_failure_never_the_commands_exit(exc: BaseException) -> None:
    """_bounded re-raised the worker's BaseException on the scan's thread: a resolver (a cloud SDK, a
    plugin) raising SystemExit(0) ended the command with exit 0, read as "all compliant"."""
    import time

    from scanner.registry import deadline
    from scanner.registry.auth import CredentialUnavailable, RegistryAuthConfig

    def ends(c: DeferredCredential) -> tuple[None, float]:
        raise exc

    for within in (deadline.within(time.monotonic() + 5, "scan deadline reached"), deadline.within(None, "")):
        store = CredentialStore(auth=RegistryAuthConfig.parse(["ecr=evil.test"]), resolvers={"ecr": ends})
        (candidate,) = store.candidates("evil.test", repository=REPO)
        with within, pytest.raises(CredentialUnavailable, match=r"^Amazon ECR.*failed: WorkerExit$"):
            store.resolve(candidate)


def test_abandoned_credential_workers_count_toward_max_abandoned(monkeypatch: pytest.MonkeyPatch) -> None:
    """A credential endpoint that never answers left one thread (and socket) behind per scan for the life
    of serve: its abandoned workers were not counted. Past MAX_ABANDONED the source is not asked."""
    import threading
    import time

    from scanner.registry import deadline
    from scanner.registry.auth import Credential, CredentialUnavailable, RegistryAuthConfig

    monkeypatch.setattr(deadline, "MAX_ABANDONED", 2, raising=False)
    monkeypatch.setattr(deadline, "_abandoned", [], raising=False)
    release = threading.Event()
    started: list[str] = []

    def hangs(c: DeferredCredential) -> tuple[Credential | None, float]:
        started.append(c.registry)
        release.wait(30)
        return Credential("AWS", "late-token"), 1e12

    hosts = ["a.evil.test", "b.evil.test", "c.evil.test"]
    store = CredentialStore(auth=RegistryAuthConfig.parse([f"ecr={h}" for h in hosts]), resolvers={"ecr": hangs})
    try:
        for i, host in enumerate(hosts):
            (candidate,) = store.candidates(host, repository=REPO)
            words = "no answer within .*; abandoned" if i < 2 else "not asked: .*2 earlier reads still hang"
            with deadline.within(time.monotonic() + 0.05, "scan deadline reached"), \
                    pytest.raises(CredentialUnavailable, match=words) as err:
                store.resolve(candidate)
            assert "late-token" not in str(err.value)
        assert started == hosts[:2]  # the third is not started while two still hang
    finally:
        release.set()

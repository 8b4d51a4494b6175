#!/usr/bin/env python3
"""A small `helm`-CLI look-alike for the end-to-end tests, built on PyPI's helm-python-sdk.

Run it through tests/e2e/helm.sh, which uses a real `helm` binary when one is on PATH and
otherwise creates a venv with the pinned SDK and runs this file.

What the SDK offers (helm-python-sdk 0.2.2, import name `helm_python`; read from its
site-packages source and checked against a Kubernetes 1.20.2 cluster)
---------------------------------------------------------------------------------------------
* Pure-stdlib ctypes binding over `libhelm_c.so` (helm-c-sdk 0.2.2, a C ABI over the official
  Helm Go SDK v4.2.3) bundled in the manylinux x86_64 wheel (~75 MB download, ~255 MB on disk:
  the .so is shipped three times, once per soname).  No runtime dependencies, no Go, no `helm`.
  Not async: every call blocks in C with the GIL released.  Errors come back as a typed
  hierarchy rooted at `HelmError` (`.code`, `.detail` = the Go error text); e.g.
  HelmNotFoundError for a missing release, HelmReleaseError for failed install/upgrade/test.
* `Config(kubeconfig_path=, kube_context=, namespace=, storage_driver=, ...)` is a cluster
  connection (lazy: nothing is contacted until the first action).  With no kubeconfig_path
  it follows Helm's own chain: $KUBECONFIG, ~/.kube/config, in-cluster service account.
  Releases are stored as Secrets (Helm's default driver), so real `helm` sees them too.
* `cfg.install(chart_path, name, values_dict, namespace=, create_namespace=, wait=, timeout=,
  dry_run=, rollback_on_failure=, context=)` and `cfg.upgrade(...)` (plus reuse/reset values,
  cleanup_on_fail, max_history).  Values are a plain dict (sent as JSON), so `--set` strings
  must be parsed first: `parse_set_string` / `parse_set_string_values` / `parse_set_json` /
  `parse_set_literal` / `parse_set_file` are Helm's own strvals parsers, `values_from_yaml`
  parses a `-f` file.  `wait` is Helm 4's strategy: "watcher" (what `--wait` means in Helm 4),
  "legacy" (Helm 3's poller), "hookOnly" (the default: no wait); `timeout` is whole seconds.
  A `HelmContext` passed as `context=` can cancel a running install/upgrade from another
  thread (the SDK may keep applying in the background after the call returns).
* `cfg.uninstall`, `cfg.status` (summary dict: name, namespace, revision, status, notes,
  deployed_at, chart_name/version, app_version, manifest), `cfg.get_all` (summary + hooks +
  config + info), `cfg.get_values`, `cfg.history`, `cfg.list`, `cfg.rollback`,
  `cfg.test(name, timeout=, logs=)` = `helm test` (runs the test hooks; test pods are left or
  deleted per their helm.sh/hook-delete-policy, as with the CLI; raises HelmReleaseError when
  a test fails; returns {"release", "logs"}; hook results then show up in get_all()["hooks"]).
* `Chart.load(path)`: `.render(values, name=, namespace=)` renders offline (a dict
  path -> text, NOTES.txt and hook documents included, CRDs not), `.crds`, `.metadata`, ...;
  `lint(path, values)`.  There is no `template` call as such; `helm template` is emulated below
  with a client-only dry-run install (Helm's own ordering, `# Source:` headers, hooks split off)
  into an in-memory release store, plus the hook documents taken from an offline render.

Checked on Kubernetes 1.20.2: install/upgrade (Helm 4 server-side apply), --create-namespace,
--wait (watcher and legacy) with --timeout, --atomic rollback, test hooks (pass and fail),
status/notes, uninstall --wait.  A cancelled install/upgrade returns before the SDK has marked
the release failed; the wrapper polls until the release leaves pending-* before exiting, so a
Ctrl-C/SIGTERM does not leave "another operation is in progress" behind.

Limits found / not supported here
---------------------------------
* The Python API does not expose every option of the C ABI (e.g. --wait-for-jobs, --skip-crds,
  --kube-version, --api-versions, --take-ownership, --force): such flags are refused with an
  error rather than silently ignored.  Unknown flags are refused too.
* `helm test`: when a test fails the SDK raises before returning, so test-pod logs (--logs)
  are only printed for passing runs.
* The namespace defaults to $HELM_NAMESPACE, else "default"; the current kubeconfig
  context's namespace is not consulted (always pass --namespace).
* `status -o json|yaml` prints the SDK's summary (plus info), not Helm's exact release JSON;
  `yaml` is printed as JSON (which is valid YAML).
* Several `--set` flags are merged in Python (nested maps merge; a list is replaced, except
  index-style `a[1]=x`, which is laid over the existing list), close to Helm's behaviour.
* Needs Python >= 3.10 and a platform with a published wheel (Linux x86_64 glibc >= 2.28,
  macOS, Windows); the sdist fallback needs Go and is refused by helm.sh (--only-binary).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
from datetime import datetime
from typing import Any, Callable

try:
    import helm_python as helm
except Exception as exc:  # noqa: BLE001 - the message is what matters
    sys.stderr.write(
        f"Error: cannot load helm-python-sdk ({type(exc).__name__}: {exc}).\n"
        "Run this through tests/e2e/helm.sh, which installs it into a venv.\n"
    )
    sys.exit(1)

PROG = "helm (helm-python-sdk)"


class UsageError(Exception):
    """Bad command line; printed as `Error: ...` with exit code 1 (like helm)."""


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived while a blocking SDK call was running."""


# --------------------------------------------------------------------------- flag parsing
# Flag kinds: "bool" (--x, --x=true|false), "value" (--x V, --x=V), "multi" (repeatable value),
# "optvalue" (pflag NoOptDefVal: bare --x means the default, a value needs --x=V, so
# `--wait --timeout 5m` and `--wait rel chart` work as they do with helm).

GLOBAL_FLAGS: dict[str, tuple[str, Any]] = {
    "namespace": ("value", None),
    "kubeconfig": ("value", None),
    "kube-context": ("value", None),
    "debug": ("bool", False),
}
SHORT = {"n": "namespace", "f": "values", "o": "output", "a": "all", "A": "all-namespaces",
         "q": "short", "s": "show-only", "h": "help"}
VALUE_FLAGS: dict[str, tuple[str, Any]] = {
    "set": ("multi", None),
    "set-string": ("multi", None),
    "set-json": ("multi", None),
    "set-file": ("multi", None),
    "set-literal": ("multi", None),
    "values": ("multi", None),
}
RELEASE_WRITE_FLAGS: dict[str, tuple[str, Any]] = {
    **VALUE_FLAGS,
    "wait": ("optvalue", "watcher"),
    "timeout": ("value", "5m0s"),
    "atomic": ("bool", False),
    "rollback-on-failure": ("bool", False),
    "description": ("value", None),
    "dry-run": ("optvalue", "client"),
    "create-namespace": ("bool", False),
}
UNSUPPORTED = {
    "wait-for-jobs", "skip-crds", "kube-version", "api-versions", "take-ownership", "force",
    "force-replace", "force-conflicts", "server-side", "post-renderer", "post-renderer-args",
    "no-hooks", "disable-openapi-validation", "skip-schema-validation", "render-subchart-notes",
    "hide-notes", "labels", "history-max", "version", "repo", "devel", "dependency-update",
    "validate", "output-dir", "cascade", "hide-secret", "enable-dns", "insecure-skip-tls-verify",
    "plain-http", "username", "password", "ca-file", "cert-file", "key-file", "verify",
    "keyring", "pass-credentials", "timestamps",
}

COMMAND_FLAGS: dict[str, dict[str, tuple[str, Any]]] = {
    "upgrade": {**RELEASE_WRITE_FLAGS, "install": ("bool", False), "reuse-values": ("bool", False),
                "reset-values": ("bool", False), "cleanup-on-fail": ("bool", False),
                "max-history": ("value", None)},
    "install": dict(RELEASE_WRITE_FLAGS),
    "uninstall": {"wait": ("optvalue", "watcher"), "timeout": ("value", "5m0s"),
                  "keep-history": ("bool", False), "ignore-not-found": ("bool", False),
                  "dry-run": ("bool", False), "description": ("value", None)},
    "status": {"revision": ("value", None), "output": ("value", "table")},
    "get": {"revision": ("value", None), "output": ("value", "yaml"), "all": ("bool", False)},
    "test": {"timeout": ("value", "5m0s"), "logs": ("bool", False), "filter": ("multi", None)},
    "template": {**VALUE_FLAGS, "include-crds": ("bool", False), "skip-tests": ("bool", False),
                 "show-only": ("multi", None), "is-upgrade": ("bool", False)},
    "list": {"all": ("bool", False), "all-namespaces": ("bool", False), "short": ("bool", False),
             "filter": ("value", None), "output": ("value", "table")},
    "history": {"max": ("value", None), "output": ("value", "table")},
    "lint": {**VALUE_FLAGS, "strict": ("bool", False), "with-subcharts": ("bool", False),
             "quiet": ("bool", False)},
    "version": {"short": ("bool", False)},
}
ALIASES = {"delete": "uninstall", "un": "uninstall", "del": "uninstall", "ls": "list",
           "hist": "history", "i": "install"}


def parse_bool(flag: str, text: str) -> bool:
    low = text.lower()
    if low in ("1", "t", "true"):
        return True
    if low in ("0", "f", "false"):
        return False
    raise UsageError(f'invalid argument "{text}" for "--{flag}" flag: expected true or false')


def parse_args(command: str, argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    spec = {**GLOBAL_FLAGS, **COMMAND_FLAGS[command]}
    opts: dict[str, Any] = {name: ([] if kind == "multi" else default)
                            for name, (kind, default) in spec.items()}
    for name, (kind, _default) in spec.items():
        if kind == "optvalue":
            opts[name] = None  # not given
    opts["_given"] = set()
    positional: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            positional.extend(argv[i:])
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
        else:  # -n ns, -n=ns, -nns
            name, rest = arg[1:2], arg[2:]
            eq, value = ("=", rest[1:]) if rest.startswith("=") else (("=", rest) if rest else ("", ""))
            if name not in SHORT:
                raise UsageError(f"unknown shorthand flag: '{name}' in {arg}")
            name = SHORT[name]
        if name == "help":
            print(USAGE)
            sys.exit(0)
        if name in UNSUPPORTED:
            raise UsageError(f"flag --{name} is not supported by this helm-python-sdk wrapper "
                             f"(tests/e2e/helm_sdk.py); install a real helm to use it")
        if name not in spec:
            raise UsageError(f"unknown flag: --{name} (for `{command}` in the helm-python-sdk wrapper)")
        kind, default = spec[name]
        opts["_given"].add(name)
        if kind == "bool":
            opts[name] = parse_bool(name, value) if eq else True
        elif kind == "optvalue":
            opts[name] = value if eq else default
        else:
            if not eq:
                if i >= len(argv):
                    raise UsageError(f"flag needs an argument: --{name}")
                value = argv[i]
                i += 1
            if kind == "multi":
                opts[name].append(value)
            else:
                opts[name] = value
    return opts, positional


def need_args(positional: list[str], names: list[str], command: str) -> None:
    if len(positional) != len(names):
        raise UsageError(f'"helm {command}" requires {len(names)} argument'
                         f'{"s" if len(names) != 1 else ""} ({" ".join(names)}), got {len(positional)}'
                         + (f": {positional}" if positional else ""))


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
                   "m": 60.0, "h": 3600.0}


def parse_duration(flag: str, text: str) -> int:
    """Go time.ParseDuration (what helm's --timeout takes) -> whole seconds, rounded up."""
    if text in ("0", "+0", "-0"):
        return 0
    m = re.fullmatch(r"[+]?((?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+", text)
    if not m:
        raise UsageError(f'invalid argument "{text}" for "--{flag}" flag: time: invalid duration "{text}" '
                         '(use a Go duration such as 180s or 5m)')
    total = sum(float(n) * _DURATION_UNITS[u]
                for n, u in re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)", text))
    return max(1, int(-(-total // 1))) if total > 0 else 0


def wait_strategy(value: str | None) -> str | None:
    if value is None:
        return None
    low = value.lower()
    if low in ("true", "1", "t", "watcher"):
        return "watcher"
    if low in ("false", "0", "f", "hookonly", "none", ""):
        return "hookOnly"
    if low == "legacy":
        return "legacy"
    raise UsageError(f'invalid argument "{value}" for "--wait" flag: must be one of watcher, legacy, hookOnly, true, false')


# --------------------------------------------------------------------------- values
def deep_merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = deep_merge(out[key], value) if key in out else value
        return out
    if isinstance(base, list) and isinstance(over, list) and any(v is None for v in over):
        # index-style --set a[2]=x: lay the given indexes over the existing list
        out = list(base) + [None] * max(0, len(over) - len(base))
        for idx, value in enumerate(over):
            if value is not None:
                out[idx] = deep_merge(out[idx], value) if out[idx] is not None else value
        return out
    return over


def collect_values(opts: dict[str, Any]) -> dict[str, Any]:
    """Helm's order: -f files, then --set-json, --set, --set-string, --set-file, --set-literal."""
    values: dict[str, Any] = {}
    for path in opts["values"]:
        try:
            text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
        except OSError as exc:
            raise UsageError(f"cannot read values file {path}: {exc}") from exc
        values = deep_merge(values, helm.values_from_yaml(text) or {})
    parsers: list[tuple[str, Callable[[str], dict[str, Any]]]] = [
        ("set-json", helm.parse_set_json),
        ("set", helm.parse_set_string),
        ("set-string", helm.parse_set_string_values),
        ("set-file", helm.parse_set_file),
        ("set-literal", helm.parse_set_literal),
    ]
    for flag, parse in parsers:
        for expr in opts[flag]:
            try:
                values = deep_merge(values, parse(expr))
            except helm.HelmError as exc:
                raise UsageError(f"failed parsing --{flag} data: {exc}") from exc
    return values


# --------------------------------------------------------------------------- SDK plumbing
def make_config(opts: dict[str, Any], namespace: str | None = None, storage_driver: str | None = None) -> "helm.Config":
    kubeconfig = opts.get("kubeconfig")
    if not kubeconfig:
        env = os.environ.get("KUBECONFIG", "")
        # A single file is passed explicitly; a path list is left to the SDK's own loading rules.
        if env and os.pathsep not in env:
            kubeconfig = env
    if kubeconfig and not os.path.exists(kubeconfig):
        raise UsageError(f"kubeconfig {kubeconfig} does not exist (from "
                         f"{'--kubeconfig' if opts.get('kubeconfig') else 'KUBECONFIG'})")
    return helm.Config(
        kubeconfig_path=kubeconfig or None,
        kube_context=opts.get("kube-context") or None,
        namespace=namespace or opts_namespace(opts),
        storage_driver=storage_driver,
    )


def opts_namespace(opts: dict[str, Any]) -> str:
    return opts.get("namespace") or os.environ.get("HELM_NAMESPACE") or "default"


def run_blocking(fn: Callable[[], Any], context: "helm.HelmContext | None" = None,
                 settle: Callable[[], bool] | None = None) -> Any:
    """Run a blocking SDK call in a worker thread so SIGINT/SIGTERM are handled promptly.

    With a HelmContext the operation is cancelled on a signal. The cancelled call returns
    before the SDK has recorded the release as failed (that happens in the background), so
    `settle` is polled for up to 20 s until it says the release left its pending-* state;
    otherwise the next upgrade would fail with "another operation is in progress".
    Without a context we just exit (the Go side dies with the process).
    """
    result: dict[str, Any] = {}

    def worker() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            result["error"] = exc

    thread = threading.Thread(target=worker, name="helm-sdk-call", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.2)
    except Interrupted:
        if context is not None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            context.cancel()
            thread.join(15)
            deadline = time.monotonic() + 20
            while settle is not None and time.monotonic() < deadline:
                try:
                    if settle():
                        break
                except Exception:  # noqa: BLE001 - best effort while exiting
                    pass
                time.sleep(0.5)
        raise
    if "error" in result:
        raise result["error"]
    return result.get("value")


def _on_signal(signum: int, _frame: Any) -> None:
    raise Interrupted(signum)


# --------------------------------------------------------------------------- printing
def fmt_time(value: Any) -> str:
    if not value:
        return ""
    try:
        stamp = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone()
    return stamp.strftime("%a %b %e %H:%M:%S %Y")


def print_release(summary: dict[str, Any], info: dict[str, Any] | None = None,
                  hooks: list[dict[str, Any]] | None = None, show_notes: bool = True) -> None:
    print(f"NAME: {summary.get('name', '')}")
    print(f"LAST DEPLOYED: {fmt_time(summary.get('deployed_at') or (info or {}).get('last_deployed'))}")
    print(f"NAMESPACE: {summary.get('namespace', '')}")
    print(f"STATUS: {summary.get('status', '')}")
    print(f"REVISION: {summary.get('revision', '')}")
    if info and info.get("description"):
        print(f"DESCRIPTION: {info['description']}")
    test_hooks = [h for h in (hooks or []) if "test" in (h.get("events") or [])
                  or "test-success" in (h.get("events") or [])]
    ran = [h for h in test_hooks if (h.get("last_run") or {}).get("phase")]
    if not ran:
        print("TEST SUITE: None")
    for hook in ran:
        last = hook["last_run"]
        print(f"TEST SUITE:     {hook.get('name', '')}")
        print(f"Last Started:   {fmt_time(last.get('started_at'))}")
        print(f"Last Completed: {fmt_time(last.get('completed_at'))}")
        print(f"Phase:          {last.get('phase')}")
    notes = summary.get("notes") or ""
    if show_notes and notes.strip():
        print("NOTES:")
        print(notes.rstrip("\n"))


def release_details(cfg: "helm.Config", name: str, revision: int | None = None) -> tuple[dict, dict, list]:
    everything = cfg.get_all(name, revision=revision)
    summary = everything.get("summary") or {}
    return summary, everything.get("info") or {}, everything.get("hooks") or []


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


# --------------------------------------------------------------------------- commands
def install_or_upgrade(command: str, opts: dict[str, Any], positional: list[str]) -> int:
    need_args(positional, ["RELEASE", "CHART"], command)
    name, chart = positional
    helm.validate_release_name(name)
    if not os.path.exists(chart):
        raise UsageError(f"chart {chart} not found (this wrapper installs local chart paths only)")
    values = collect_values(opts)
    namespace = opts_namespace(opts)
    timeout = parse_duration("timeout", opts["timeout"])
    wait = wait_strategy(opts["wait"])
    dry_run = opts["dry-run"]
    if dry_run is not None and dry_run not in ("client", "server", "none", "true", "false"):
        raise UsageError(f'invalid --dry-run value "{dry_run}": must be client, server or none')
    dry_run = {"true": "client", "false": None, "none": None}.get(dry_run, dry_run)
    rollback = bool(opts["atomic"] or opts["rollback-on-failure"])
    common = dict(namespace=namespace, timeout=timeout or None, wait=wait, dry_run=dry_run,
                  rollback_on_failure=rollback, description=opts["description"])
    with make_config(opts, namespace) as cfg:
        do_install = command == "install"
        if command == "upgrade" and opts["install"]:
            try:
                run_blocking(lambda: cfg.history(name, max_revisions=1))
            except helm.HelmNotFoundError:
                print(f'Release "{name}" does not exist. Installing it now.')
                do_install = True
        def settled() -> bool:
            try:
                latest = cfg.history(name, max_revisions=1)
            except helm.HelmNotFoundError:
                return True
            return not latest or not str(latest[-1].get("status", "")).startswith("pending")

        with helm.HelmContext() as ctx:
            if do_install:
                try:
                    rel = run_blocking(lambda: cfg.install(
                        chart, name, values, context=ctx,
                        create_namespace=opts["create-namespace"], **common), ctx, settled)
                except helm.HelmError as exc:
                    raise helm.HelmError(f"INSTALLATION FAILED: {exc}") from exc
            else:
                if opts["max-history"] is not None and not opts["max-history"].isdigit():
                    raise UsageError(f'invalid argument "{opts["max-history"]}" for "--max-history"')
                try:
                    rel = run_blocking(lambda: cfg.upgrade(
                        chart, name, values, context=ctx,
                        reuse_values=opts["reuse-values"], reset_values=opts["reset-values"],
                        cleanup_on_fail=opts["cleanup-on-fail"],
                        max_history=int(opts["max-history"]) if opts["max-history"] else None,
                        **common), ctx, settled)
                except helm.HelmError as exc:
                    raise helm.HelmError(f"UPGRADE FAILED: {exc}") from exc
                print(f'Release "{name}" has been upgraded. Happy Helming!')
        print_release(rel)
        if dry_run:
            print("HOOKS: (not shown by the helm-python-sdk wrapper)\nMANIFEST:")
            print(rel.get("manifest", ""))
    return 0


def cmd_uninstall(opts: dict[str, Any], positional: list[str]) -> int:
    if not positional:
        raise UsageError('"helm uninstall" requires at least 1 argument (RELEASE_NAME)')
    timeout = parse_duration("timeout", opts["timeout"])
    wait = wait_strategy(opts["wait"])
    with make_config(opts) as cfg:
        for name in positional:
            res = run_blocking(lambda: cfg.uninstall(
                name, keep_history=opts["keep-history"], timeout=timeout or None,
                dry_run=opts["dry-run"], ignore_not_found=opts["ignore-not-found"],
                wait=wait, description=opts["description"]))
            if res.get("info"):
                print(res["info"])
            if "release" in res or opts["dry-run"]:
                print(f'release "{name}" uninstalled')
            else:  # --ignore-not-found and nothing there
                print(f'release "{name}" not found, nothing to uninstall')
    return 0


def parse_revision(opts: dict[str, Any]) -> int | None:
    rev = opts.get("revision")
    if rev is None:
        return None
    if not str(rev).isdigit():
        raise UsageError(f'invalid argument "{rev}" for "--revision" flag')
    return int(rev)


def cmd_status(opts: dict[str, Any], positional: list[str]) -> int:
    need_args(positional, ["RELEASE_NAME"], "status")
    output = opts["output"]
    if output not in ("table", "json", "yaml"):
        raise UsageError(f'invalid argument "{output}" for "--output": table, json or yaml')
    with make_config(opts) as cfg:
        summary, info, hooks = run_blocking(lambda: release_details(cfg, positional[0], parse_revision(opts)))
        if output == "table":
            print_release(summary, info, hooks)
        else:
            print_json({**{k: v for k, v in summary.items() if k != "manifest"}, "info": info})
    return 0


def cmd_get(opts: dict[str, Any], positional: list[str]) -> int:
    if not positional or positional[0] not in ("notes", "values", "manifest", "hooks"):
        raise UsageError("usage: helm get notes|values|manifest|hooks RELEASE_NAME")
    what, rest = positional[0], positional[1:]
    need_args(rest, ["RELEASE_NAME"], f"get {what}")
    name, revision = rest[0], parse_revision(opts)
    with make_config(opts) as cfg:
        if what == "notes":
            summary = run_blocking(lambda: cfg.status(name, revision=revision))
            notes = summary.get("notes") or ""
            if notes:
                print("NOTES:")
                print(notes.rstrip("\n"))
        elif what == "manifest":
            summary = run_blocking(lambda: cfg.status(name, revision=revision))
            sys.stdout.write(summary.get("manifest") or "")
        elif what == "hooks":
            _summary, _info, hooks = run_blocking(lambda: release_details(cfg, name, revision))
            for hook in hooks:
                print(f"---\n# Source: {hook.get('path', '')}\n{(hook.get('manifest') or '').rstrip()}")
        else:
            vals = run_blocking(lambda: cfg.get_values(name, all_values=opts["all"], revision=revision))
            if opts["output"] == "json":
                print(json.dumps(vals))
            else:
                print("COMPUTED VALUES:" if opts["all"] else "USER-SUPPLIED VALUES:")
                print(json.dumps(vals, indent=2, sort_keys=True) if vals else "null")
    return 0


def cmd_test(opts: dict[str, Any], positional: list[str]) -> int:
    need_args(positional, ["RELEASE"], "test")
    name = positional[0]
    timeout = parse_duration("timeout", opts["timeout"])
    include, exclude = [], []
    for item in opts["filter"]:
        for part in item.split(","):
            key, _, value = part.partition("=")
            if key == "name":
                include.append(value)
            elif key == "!name":
                exclude.append(value)
            else:
                raise UsageError(f"invalid --filter {part!r}: use name=NAME or !name=NAME")
    if not hasattr(helm.Config, "test"):
        raise helm.HelmError("this helm-python-sdk has no Config.test(): `helm test` is not supported; "
                             "install a real helm")
    with make_config(opts) as cfg:
        try:
            res = run_blocking(lambda: cfg.test(name, timeout=timeout or None, logs=opts["logs"],
                                                include_names=include or None,
                                                exclude_names=exclude or None))
        except helm.HelmError as exc:
            # Show which hook failed, as helm does, then fail.
            try:
                summary, info, hooks = release_details(cfg, name)
                print_release(summary, info, hooks, show_notes=False)
            except helm.HelmError:
                pass
            raise
        summary, info, hooks = run_blocking(lambda: release_details(cfg, name))
        print_release(summary, info, hooks, show_notes=False)
        if opts["logs"] and res.get("logs"):
            print()
            print(res["logs"].rstrip("\n"))
    return 0


_HOOK_RE = re.compile(r"""(?<![\w./-])["']?helm\.sh/hook["']?\s*:\s*["']?([^"'\n#}]*)""")
_DOC_SPLIT = re.compile(r"(?:^|\s*\n)---\s*")


def hook_documents(rendered: dict[str, str], skip_tests: bool) -> list[tuple[str, str]]:
    """Hook documents of an offline render, the way helm's SortManifests splits them off."""
    hooks = []
    for path in sorted(rendered):
        if path.endswith("NOTES.txt"):
            continue
        for doc in _DOC_SPLIT.split(rendered[path]):
            if not doc.strip():
                continue
            m = _HOOK_RE.search(doc)
            if not m:
                continue
            events = [e.strip() for e in m.group(1).split(",")]
            if skip_tests and any(e in ("test", "test-success") for e in events):
                continue
            hooks.append((path, doc.strip("\n")))
    return hooks


def cmd_template(opts: dict[str, Any], positional: list[str]) -> int:
    if len(positional) == 1:
        name, chart_path = "release-name", positional[0]
    else:
        need_args(positional, ["NAME", "CHART"], "template")
        name, chart_path = positional
    if not os.path.exists(chart_path):
        raise UsageError(f"chart {chart_path} not found (this wrapper templates local chart paths only)")
    values = collect_values(opts)
    namespace = opts_namespace(opts)
    out: list[str] = []
    with helm.Chart.load(chart_path) as chart:
        if opts["include-crds"]:
            for crd in chart.crds:
                out.append(f"---\n# Source: {crd.get('filename') or crd.get('name')}\n{crd.get('data', '')}\n")
        # Client-only dry run into an in-memory release store: never touches a cluster.
        with helm.Config(namespace=namespace, storage_driver="memory",
                         kubeconfig_content="apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n") as cfg:
            try:
                rel = cfg.install(chart, name, values, namespace=namespace, dry_run="client",
                                  timeout=None)
            except helm.HelmError as exc:
                raise helm.HelmError(f"template: {exc}") from exc
        manifest = rel.get("manifest") or ""
        if manifest:
            out.append(manifest if manifest.endswith("\n") else manifest + "\n")
        rendered = chart.render(values, name=name, namespace=namespace,
                                is_upgrade=True if opts["is-upgrade"] else None)
        for path, doc in hook_documents(rendered, opts["skip-tests"]):
            out.append(f"---\n# Source: {path}\n{doc}\n")
    text = "".join(out)
    if opts["show-only"]:
        wanted = set()
        for item in opts["show-only"]:
            wanted.add(item if item.startswith(chart_dir_name(chart_path) + "/") else f"{chart_dir_name(chart_path)}/{item}")
        docs = [d for d in re.split(r"(?m)^---\n", text) if d.strip()]
        kept = [d for d in docs if (m := re.match(r"# Source: (\S+)", d)) and m.group(1) in wanted]
        if not kept:
            raise helm.HelmError(f"could not find template {', '.join(opts['show-only'])} in chart")
        text = "".join(f"---\n{d}" for d in kept)
    sys.stdout.write(text)
    return 0


def chart_dir_name(chart_path: str) -> str:
    with helm.Chart.load(chart_path) as chart:
        return chart.name


def cmd_list(opts: dict[str, Any], positional: list[str]) -> int:
    with make_config(opts) as cfg:
        rels = run_blocking(lambda: cfg.list(all_states=opts["all"], all_namespaces=opts["all-namespaces"],
                                             name_filter=opts["filter"]))
    if opts["output"] == "json":
        print(json.dumps(rels, default=str))
    elif opts["short"]:
        for r in rels:
            print(r.get("name"))
    else:
        print("NAME\tNAMESPACE\tREVISION\tUPDATED\tSTATUS\tCHART\tAPP VERSION")
        for r in rels:
            print(f"{r.get('name')}\t{r.get('namespace')}\t{r.get('revision')}\t{fmt_time(r.get('deployed_at'))}\t"
                  f"{r.get('status')}\t{r.get('chart_name')}-{r.get('chart_version')}\t{r.get('app_version', '')}")
    return 0


def cmd_history(opts: dict[str, Any], positional: list[str]) -> int:
    need_args(positional, ["RELEASE_NAME"], "history")
    with make_config(opts) as cfg:
        rels = run_blocking(lambda: cfg.history(positional[0],
                                                max_revisions=int(opts["max"]) if opts["max"] else None))
    if opts["output"] == "json":
        print(json.dumps(rels, default=str))
    else:
        print("REVISION\tUPDATED\tSTATUS\tCHART\tAPP VERSION")
        for r in rels:
            print(f"{r.get('revision')}\t{fmt_time(r.get('deployed_at'))}\t{r.get('status')}\t"
                  f"{r.get('chart_name')}-{r.get('chart_version')}\t{r.get('app_version', '')}")
    return 0


def cmd_lint(opts: dict[str, Any], positional: list[str]) -> int:
    paths = positional or ["."]
    failed = False
    for path in paths:
        report = helm.lint(path, collect_values(opts) or None, strict=opts["strict"] or None,
                           namespace=opts.get("namespace") or None,
                           with_subcharts=opts["with-subcharts"] or None, quiet=opts["quiet"] or None)
        print(f"==> Linting {path}")
        for msg in report.get("messages") or []:
            sev = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}.get(msg.get("severity"), "?")
            print(f"[{sev}] {msg.get('path')}: {msg.get('error')}")
        errors = report.get("errors") or []
        if errors or any(m.get("severity") == 3 for m in report.get("messages") or []):
            failed = True
            for err in errors:
                print(f"Error: {err}", file=sys.stderr)
    print(f"\n{len(paths)} chart(s) linted, {'1 or more' if failed else 'no'} chart(s) failed")
    return 1 if failed else 0


def cmd_version(opts: dict[str, Any], positional: list[str]) -> int:
    sdk = helm.helm_sdk_version()
    if opts["short"]:
        print(sdk)
    else:
        print(f'version.BuildInfo{{Version:"{sdk}", HelmCSDK:"{helm.helm_c_version()}", '
              f'HelmPythonSDK:"{helm.__version__}", Library:"{helm.library_path}"}}')
    return 0


COMMANDS: dict[str, Callable[[dict[str, Any], list[str]], int]] = {
    "upgrade": lambda o, p: install_or_upgrade("upgrade", o, p),
    "install": lambda o, p: install_or_upgrade("install", o, p),
    "uninstall": cmd_uninstall,
    "status": cmd_status,
    "get": cmd_get,
    "test": cmd_test,
    "template": cmd_template,
    "list": cmd_list,
    "history": cmd_history,
    "lint": cmd_lint,
    "version": cmd_version,
}

USAGE = f"""{PROG}: a helm-CLI look-alike over helm-python-sdk (used by tests/e2e when no helm binary)

Commands:
  upgrade [--install] RELEASE CHART_DIR  [-n NS] [--create-namespace] [--set k=v ...] [-f values.yaml]
                                        [--wait[=watcher|legacy]] [--timeout 5m0s] [--atomic] [--dry-run]
  install RELEASE CHART_DIR             (same flags)
  uninstall RELEASE... [-n NS] [--wait] [--timeout D] [--ignore-not-found] [--keep-history]
  status RELEASE [-n NS] [--revision N] [-o table|json]
  get notes|values|manifest|hooks RELEASE [-n NS] [--revision N]
  test RELEASE [-n NS] [--timeout D] [--logs] [--filter name=X]
  template [NAME] CHART_DIR [--set ...] [-f ...] [-n NS] [--include-crds] [--skip-tests] [-s templates/x.yaml]
  list [-n NS | -A] [-a] [-q]      history RELEASE      lint CHART_DIR      version [--short]
Global: --namespace/-n, --kubeconfig (default $KUBECONFIG), --kube-context, --debug"""


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 1
    if argv[0] in ("--version", "-v"):
        argv = ["version", *argv[1:]]
    command = ALIASES.get(argv[0], argv[0])
    if command not in COMMANDS:
        sys.stderr.write(f'Error: unknown command "{argv[0]}" for the helm-python-sdk wrapper\n{USAGE}\n')
        return 1
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        opts, positional = parse_args(command, argv[1:])
        if opts["debug"]:
            import logging

            logging.basicConfig(level=logging.DEBUG, stream=sys.stderr,
                                format="%(asctime)s %(levelname)s %(message)s")
            helm.enable_logging(logging.DEBUG)
        return COMMANDS[command](opts, positional)
    except UsageError as exc:
        sys.stderr.write(f"Error: {exc}\n")
        return 1
    except Interrupted as exc:
        signum = exc.args[0]
        sys.stderr.write(f"Error: interrupted by {signal.Signals(signum).name} "
                         "(a running install/upgrade is cancelled and marked failed)\n")
        sys.stderr.flush()
        os._exit(128 + signum)
    except helm.HelmError as exc:
        kind = type(exc.__cause__ or exc).__name__
        sys.stderr.write(f"Error: {exc}\n")
        if opts_debug(argv):
            sys.stderr.write(f"(helm-python-sdk {kind}, code {getattr(exc.__cause__ or exc, 'code', None)})\n")
        return 1


def opts_debug(argv: list[str]) -> bool:
    return "--debug" in argv


if __name__ == "__main__":
    try:
        code = main(sys.argv[1:])
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. `helm.sh template ... | head`
        os._exit(141)
    sys.exit(code)

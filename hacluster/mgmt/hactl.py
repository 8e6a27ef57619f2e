"""hactl, the operator's command line: xe verbs sent to the pool over the management API.

Usage::

    hactl [--config FILE] [-s HOST:PORT ...] [--json] VERB [key=value ...] [--force]
    hactl help [VERB]
    hactl --completion bash
    hactl role-secret ROLE NAME

Rules:

* The call is checked against the verb table (:mod:`hacluster.mgmt.verbs`)
  first: a malformed call is refused before the configuration is read or any
  connection is made. hactl's own options may stand anywhere on the line.
* The configuration (``--config FILE``, else ``$HACTL_CONFIG``) is TOML:
  ``servers`` (every host's management address, ``host:port``, IPv6 as
  ``[addr]:port``), ``ca`` (the pool CA certificate), and ``secret_file``
  (the pool secret as text) or ``cert`` and ``key`` (a pool client
  certificate), or both. Paths are relative to the configuration file's
  directory. ``-s`` (repeatable) replaces ``servers``. Every field is checked
  before the call is sent.
* Every problem is one line on stderr, ``hactl: <what is wrong and what to
  do>``. Exit code 2: a usage or configuration error; 1: the pool refused
  the call or no host answered; 0: done.
* ``hactl help`` shows the role each verb needs (read-only, operator,
  emergency: :mod:`hacluster.mgmt.roles`). ``hactl role-secret ROLE NAME``
  prints the role secret of NAME, made from the pool secret in
  ``secret_file`` (so only the pool secret's holder can make one); it
  connects to nothing.
* Progress messages go to stderr as they arrive; the result goes to stdout,
  as text (:mod:`hacluster.mgmt.render`) or, with ``--json``, as JSON.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import ssl
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hacluster import __version__
from hacluster.mgmt import api, render
from hacluster.mgmt.pipes import quiet_on_closed_pipe
from hacluster.mgmt.roles import Role, check_name, role_secret
from hacluster.mgmt.tls import CertFiles, TLSError, client_context
from hacluster.mgmt.verbs import VERBS, Call, UsageError, Verb, lookup, parse
from hacluster.model.address import Address, ConfigError
from hacluster.model.tomlfile import read_toml

OK, FAILED, USAGE = 0, 1, 2
CONFIG_ENV = "HACTL_CONFIG"
CONFIG_FIELDS = ("servers", "ca", "secret_file", "cert", "key")
PATH_EXAMPLES = {"ca": "ca.pem", "secret_file": "pool.secret", "cert": "admin.pem",
                 "key": "admin.key"}
VALUE_OPTIONS = ("--config", "-s", "--completion")
HELP_OPTIONS = ("-h", "--help")
SHELLS = ("bash",)
WATCH_EVERY, MIN_WATCH, MAX_WATCH = 2.0, 0.5, 3600.0  # seconds between --watch calls
CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear the screen
NAME_COLUMN = 36

USAGE_TEXT = """\
usage: hactl [--config FILE] [-s HOST:PORT ...] [--json] VERB [key=value ...] [--force]
       hactl [...] --watch[=SECONDS] VERB [key=value ...]   (a read verb, again and again)
       hactl help [VERB]
       hactl --completion bash
       hactl role-secret ROLE NAME     (a secret of ROLE for NAME, from the pool secret)
       hactl --version"""
ROLE_SECRET = "role-secret"
ROLE_COLUMN = 10

CONFIG_TEXT = f"""\
configuration: --config FILE, else ${CONFIG_ENV}; a TOML file:
  servers = ["10.77.0.1:7100", "[fd00::2]:7100"]   # every host's management address
  ca = "ca.pem"                                     # the pool CA certificate
  secret_file = "pool.secret"                       # the pool secret, as text
  # the pool secret is the emergency role; a role secret (hactl role-secret
  # read-only alice > alice.secret) may stand in its place: least privilege
  # or, instead of (or with) the secret, a pool client certificate:
  # cert = "admin.pem"
  # key = "admin.key"
paths are relative to the file's directory; -s HOST:PORT (repeatable) replaces servers"""


@dataclass
class Options:
    """The command line, split into hactl's own options and the call's words."""

    config: str | None = None
    servers: list[str] = field(default_factory=list)
    json: bool = False
    completion: str | None = None
    help: bool = False
    version: bool = False
    watch: float | None = None  # seconds between two calls of a read verb
    words: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Settings:
    """Where to send the call and how to authenticate it."""

    endpoints: tuple[tuple[str, int], ...]
    context: ssl.SSLContext
    secret: bytes


@quiet_on_closed_pipe
def main(argv: Sequence[str] | None = None) -> int:
    try:
        options = parse_options(sys.argv[1:] if argv is None else argv)
        if options.version:
            return show(f"hactl {__version__}")
        if options.completion is not None:
            return show(completion_script(options.completion))
        if options.words[:1] == ["help"]:
            return show(help_text(options.words[1:]))
        if options.words[:1] == [ROLE_SECRET]:
            return show(make_role_secret(options))
        call = parse(options.words)
        if options.watch is not None and lookup(call.verb).role is not Role.READ_ONLY:
            raise UsageError(f"--watch repeats a verb that only reads; {call.verb} changes "
                             "the pool")
        settings = load_settings(options)
    except (UsageError, ConfigError) as error:
        return fail(error, USAGE)
    if options.watch is not None:
        return watch(call, settings, options.json, options.watch)
    return run(call, settings, options.json)


def watch(call: Call, settings: Settings, as_json: bool, every: float) -> int:
    """``call`` every ``every`` seconds, the screen cleared each time, until interrupted."""
    try:
        while True:
            print(CLEAR + f"every {every:g} s: hactl {call.verb}  "
                  f"({time.strftime('%H:%M:%S')}; Ctrl-C to stop)\n", end="")
            run(call, settings, as_json)
            sys.stdout.flush()
            time.sleep(every)
    except KeyboardInterrupt:
        return OK


def show(text: str) -> int:
    print(text)
    return OK


def fail(error: Exception | str, code: int) -> int:
    print(f"hactl: {error}", file=sys.stderr)
    return code


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(call: Call, settings: Settings, as_json: bool) -> int:
    try:
        result = asyncio.run(api.call(settings.endpoints, settings.context, settings.secret,
                                      call, progress=progress))
    except api.ApiError as error:
        return fail(error, FAILED)
    return output(call.verb, result, as_json)


def output(verb: str, result: Any, as_json: bool) -> int:
    if as_json:
        return show(json.dumps(result, indent=2, sort_keys=True, default=str))
    try:
        text = render.render(verb, result)
    except (KeyError, TypeError, ValueError) as error:
        return fail(f"{verb}: the answer has an unexpected shape ({type(error).__name__}: "
                    f"{error}); run it again with --json to see it as received", FAILED)
    return show(text) if text else OK


# ---------------------------------------------------------------- command line


def parse_options(argv: Sequence[str]) -> Options:
    """hactl's options (anywhere on the line) apart from the call's words."""
    options = Options()
    words = iter(argv)
    for word in words:
        name, equals, inline = word.partition("=")
        if name in VALUE_OPTIONS:
            _set_option(options, name, inline if equals else _option_value(name, words))
        elif word == "--json":
            options.json = True
        elif word == "--version":
            options.version = True
        elif name == "--watch":
            options.watch = _seconds(inline) if equals else WATCH_EVERY
        elif word in HELP_OPTIONS:
            options.help = True
        elif word.startswith("-") and not options.words:
            raise UsageError(f"unknown option {word!r}; options: --config FILE, -s HOST:PORT, "
                             "--json, --watch[=SECONDS], --completion bash, --version, --help "
                             "(see 'hactl help')")
        else:
            options.words.append(word)
    if options.help:
        options.words = ["help", *options.words[:1]]
    return options


def _seconds(text: str) -> float:
    try:
        every = float(text)
    except ValueError:
        every = math.nan
    if not MIN_WATCH <= every <= MAX_WATCH:  # NaN fails both
        raise UsageError(f"--watch takes seconds from {MIN_WATCH:g} to {MAX_WATCH:g}, "
                         f"got {text!r}")
    return every


def _option_value(name: str, words: Iterator[str]) -> str:
    value = next(words, None)
    if value is None:
        raise UsageError(f"{name} needs a value (see 'hactl help')")
    return value


def _set_option(options: Options, name: str, value: str) -> None:
    if name == "--config":
        options.config = value
    elif name == "-s":
        options.servers.append(value)
    else:
        options.completion = value


# ---------------------------------------------------------------- help


def help_text(words: Sequence[str]) -> str:
    if len(words) > 1:
        raise UsageError(f"help takes one verb at most, got {' '.join(words)}")
    return verb_help(lookup(words[0])) if words else overview()


def overview() -> str:
    verbs = [f"  {verb.name:<{NAME_COLUMN}} {verb.role.label:<{ROLE_COLUMN}} {verb.summary}"
             for verb in VERBS.values()]
    return "\n".join([USAGE_TEXT, "", "verbs, the least role that may run each ('hactl help "
                      "VERB' for its parameters):", *verbs, "", CONFIG_TEXT])


def verb_help(verb: Verb) -> str:
    params = [f"  {_key_text(key):<{NAME_COLUMN}}"
              f"{' (required)' if key in verb.required else ''}".rstrip()
              for key in verb.params]
    runs_on = ("the host it is sent to (works without a master; pick it with -s)"
               if verb.local else "the master (any host of the pool relays it)")
    return "\n".join([f"hactl {verb.name}: {verb.summary}", "",
                      "parameters:", *(params or ["  none"]),
                      *(["flags:", *(f"  {flag}" for flag in verb.flags)] if verb.flags else []),
                      f"runs on: {runs_on}",
                      f"needs: a credential of role {verb.role.label} or higher"])


def make_role_secret(options: Options) -> str:
    """``hactl role-secret ROLE NAME``: the secret, from the configured pool secret."""
    words = options.words[1:]
    if len(words) != 2:
        raise UsageError(f"{ROLE_SECRET} takes a role ({', '.join(r.label for r in Role)}) "
                         "and a name, e.g. hactl role-secret read-only alice")
    try:
        role = Role.named(words[0])
        name = check_name(words[1])
    except ValueError as error:  # CredentialError too
        raise UsageError(f"{ROLE_SECRET}: {error}") from None
    path = _config_path(options)
    secret_file = _path_field(read_toml(path, ConfigError), "secret_file", path)
    if secret_file is None:
        raise ConfigError(f"{path}: {ROLE_SECRET} needs 'secret_file' (the pool secret)")
    return role_secret(read_secret(secret_file), role, name)


def _key_text(key: str) -> str:
    return f"{key}KEY=..." if key.endswith(":") else f"{key}=..."


# ---------------------------------------------------------------- configuration


def load_settings(options: Options) -> Settings:
    path = _config_path(options)
    table = read_toml(path, ConfigError)
    unknown = sorted(set(table) - set(CONFIG_FIELDS))
    if unknown:
        raise ConfigError(f"{path}: unknown field(s) {unknown}; known: {list(CONFIG_FIELDS)}")
    secret, cert = _credentials(table, path)
    try:
        context = client_context(_required_path(table, "ca", path), cert)
    except TLSError as error:
        raise ConfigError(str(error)) from None
    return Settings(_endpoints(options.servers, table, path), context, secret)


def _config_path(options: Options) -> Path:
    text = options.config or os.environ.get(CONFIG_ENV, "")
    if not text:
        raise ConfigError(f"no configuration: pass --config FILE or set {CONFIG_ENV} "
                          "(see 'hactl help' for the format)")
    return Path(text).expanduser()


def _endpoints(servers: Sequence[str], table: dict[str, Any],
               path: Path) -> tuple[tuple[str, int], ...]:
    if servers:
        named = [("-s", text) for text in servers]
    else:
        listed = table.get("servers")
        if not isinstance(listed, list) or not listed or \
                not all(isinstance(text, str) for text in listed):
            raise ConfigError(f"{path}: 'servers' must list every host's management address, "
                              f"e.g. servers = [\"10.77.0.1:7100\"], got {listed!r}; or pass -s")
        named = [(f"{path}: servers[{index}]", text) for index, text in enumerate(listed)]
    addresses = [Address.parse(text, where) for where, text in named]
    return tuple((address.host, address.port) for address in addresses)


def _credentials(table: dict[str, Any], path: Path) -> tuple[bytes, CertFiles | None]:
    secret_file = _path_field(table, "secret_file", path)
    cert, key = _path_field(table, "cert", path), _path_field(table, "key", path)
    if (cert is None) != (key is None):
        raise ConfigError(f"{path}: 'cert' and 'key' go together (a pool client certificate "
                          "and its private key): give both or neither")
    if secret_file is None and cert is None:
        raise ConfigError(f"{path}: missing field 'secret_file' (the pool secret), or 'cert' "
                          "and 'key' (a pool client certificate)")
    secret = read_secret(secret_file) if secret_file is not None else b""
    return secret, CertFiles(cert, key) if cert is not None and key is not None else None


def _path_field(table: dict[str, Any], name: str, path: Path) -> Path | None:
    value = table.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value or "\0" in value:
        raise ConfigError(f"{path}: field {name!r} must be a file path, e.g. "
                          f"{_example(name)}, got {value!r}")
    return path.parent / Path(value).expanduser()


def _required_path(table: dict[str, Any], name: str, path: Path) -> Path:
    value = _path_field(table, name, path)
    if value is None:
        raise ConfigError(f"{path}: missing field {name!r}, e.g. {_example(name)}")
    return value


def _example(name: str) -> str:
    return f"{name} = \"{PATH_EXAMPLES[name]}\""


def read_secret(path: Path) -> bytes:
    """The pool secret: the file's text without surrounding whitespace."""
    try:
        secret = path.read_text().strip()
    except OSError as error:
        raise ConfigError(f"secret file {path}: {error.strerror}; point secret_file at a copy "
                          "of the pool secret") from None
    except UnicodeDecodeError:
        raise ConfigError(f"secret file {path}: not text; it must hold the pool secret "
                          "as text") from None
    if not secret:
        raise ConfigError(f"secret file {path} is empty; copy the pool secret into it")
    return secret.encode()


# ---------------------------------------------------------------- completion


BASH_COMPLETION = r"""# bash completion for hactl; load it with: source <(hactl --completion bash)
_hactl_verb_words() {
    case $1 in
@ARMS@
    esac
}

_hactl_offer() {  # _hactl_offer SUFFIX WORD...: the words starting with $cur, SUFFIX appended
    local suffix=$1 word
    shift
    for word in "$@"; do
        [[ $word == "$cur"* ]] && COMPREPLY+=("$word$suffix")
    done
}

_hactl() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local verb="" given=" " word i
    COMPREPLY=()
    case $prev in
        --config) COMPREPLY=($(compgen -f -- "$cur")); compopt -o filenames 2>/dev/null
                  return 0 ;;
        --completion) _hactl_offer " " @SHELLS@; compopt -o nospace 2>/dev/null; return 0 ;;
        -s|=|:) return 0 ;;
    esac
    [[ $cur == "=" || $cur == ":" || $cur == *=* ]] && return 0
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        case $word in
            --config|-s|--completion) ((i += 1)) ;;
            =) given+="${COMP_WORDS[i-1]}= " ;;
            *=*) given+="${word%%=*}= " ;;
            *) [[ -z $verb && " help @VERBS@ " == *" $word "* ]] && verb=$word ;;
        esac
    done
    if [[ -z $verb ]]; then
        _hactl_offer " " help @VERBS@ @OPTIONS@
    elif [[ $verb == help ]]; then
        _hactl_offer " " @VERBS@
    else
        for word in $(_hactl_verb_words "$verb"); do
            case $word in
                -*) _hactl_offer " " "$word" ;;
                *:) _hactl_offer "" "$word" ;;
                *) [[ $given == *" $word "* ]] || _hactl_offer "" "$word" ;;
            esac
        done
    fi
    compopt -o nospace 2>/dev/null
    return 0
}
complete -F _hactl hactl
"""


def completion_script(shell: str) -> str:
    """The shell's completion script: verbs, then the verb's ``key=`` words and flags."""
    if shell not in SHELLS:
        raise UsageError(f"--completion: no completion for {shell!r}; supported: "
                         f"{', '.join(SHELLS)}")
    arms = "\n".join(f"        {verb.name}) echo \"{' '.join(completion_words(verb))}\" ;;"
                     for verb in VERBS.values())
    options = ["--config", "-s", "--json", "--completion", "--help"]
    return (BASH_COMPLETION.replace("@ARMS@", arms).replace("@VERBS@", " ".join(VERBS))
            .replace("@OPTIONS@", " ".join(options)).replace("@SHELLS@", " ".join(SHELLS)))


def completion_words(verb: Verb) -> list[str]:
    """``key=`` for a parameter, the prefix for a map (``ha-config:``), then the flags."""
    return [key if key.endswith(":") else f"{key}=" for key in verb.params] + list(verb.flags)


if __name__ == "__main__":
    raise SystemExit(main())

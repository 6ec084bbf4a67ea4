"""Bash completion for ``lxdlib``, generated from the command's own argparse parser.

``lxdlib completion bash`` prints the script (``source <(lxdlib completion bash)``, or save it
in ``/etc/bash_completion.d/lxdlib``). It is made from the parser, so every command, subcommand
and option is there without a hand-kept list; instance names are listed from the root's
``containers/`` directory (honouring ``--root`` and ``$LXDLIB_ROOT``), so completing costs no
Python start.
"""

from __future__ import annotations

import argparse
import functools
import shlex
from collections.abc import Iterator

# top-level commands whose free positionals name instances
INSTANCE_COMMANDS = frozenset({
    "start", "stop", "restart", "pause", "delete", "rm", "move", "mv", "info", "exec",
    "snapshot", "restore", "console", "copy", "cp", "publish", "export", "config", "rebuild",
    "rename", "list", "ls"})
_INSTANCE_DESTS = frozenset({"name", "names", "source", "target", "args", "filters"})


# argparse has no public way to list a parser's arguments or find its subcommands: the two
# functions below are the only places that read its internals (``_actions`` and the
# ``_SubParsersAction`` class), stable since Python 3.2 and read the same way by shtab and
# argcomplete.
def _actions(p: argparse.ArgumentParser) -> list[argparse.Action]:
    return list(p._actions)


def _subparsers(p: argparse.ArgumentParser) -> argparse._SubParsersAction | None:  # type: ignore[type-arg]
    for action in _actions(p):
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _kind(top: str, action: argparse.Action) -> str:
    """How to complete one positional: i instance, p instance/path, f host file, c:a|b choices,
    n nothing."""
    metavar = str(action.metavar or "")
    if action.choices:
        return "c:" + "|".join(str(c) for c in action.choices)
    if "/<path>" in metavar:
        return "p"
    if action.dest in ("instance", "instances") or metavar == "<instance>":
        return "i"
    if top in INSTANCE_COMMANDS and action.dest in _INSTANCE_DESTS:
        return "i"
    return "f"


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
         ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    sub = _subparsers(parser)
    if sub is None:
        return
    for name, child in sub.choices.items():
        yield from walk(child, (*path, name))


def spec(parser: argparse.ArgumentParser) -> dict[str, dict[str, str]]:
    """Per command path: its subcommands, options, options taking a value, positional kinds."""
    out: dict[str, dict[str, str]] = {}
    for path, p in walk(parser):
        key = " ".join(("_", *path))  # bash refuses an empty key
        sub = _subparsers(p)
        opts: list[str] = []
        valued: list[str] = []
        kinds: list[str] = []
        for action in _actions(p):
            if action is sub:
                continue
            if action.option_strings:
                if action.help == argparse.SUPPRESS:
                    continue
                opts += action.option_strings
                if action.nargs != 0:
                    valued += action.option_strings
            else:
                kind = _kind(path[0] if path else "", action)
                if action.nargs in ("+", "*", argparse.REMAINDER):
                    # `config set <instance> <key> <value>`: only the first is an instance
                    kinds += [kind, "n*"] if action.dest == "args" and kind == "i" else \
                        [kind + "*"]
                else:
                    kinds.append(kind)
        out[key] = {"subs": " ".join(sorted(sub.choices)) if sub else "",
                    "opts": " ".join(sorted(set(opts))), "valued": " ".join(sorted(set(valued))),
                    "pos": " ".join(kinds)}
    return out


_FUNCTION = r'''
_lxdlib_instances() {
    local dir="${1:-${LXDLIB_ROOT:-/var/lib/lxdlib}}/containers" d
    [[ -d $dir ]] || return 0
    for d in "$dir"/*/; do
        [[ -f ${d}instance.yaml ]] && printf '%s\n' "$(basename "$d")"
    done
}

_lxdlib() {
    local cur="${COMP_WORDS[COMP_CWORD]}" root="" i w pos=() path="_" n
    COMPREPLY=()
    # the command path (words that are subcommands), then the positionals after it
    for ((i = 1; i < COMP_CWORD; i++)); do
        w="${COMP_WORDS[i]}"
        if [[ $w == --root ]]; then root="${COMP_WORDS[i+1]}"; ((i++)); continue; fi
        if [[ $w == --root=* ]]; then root="${w#--root=}"; continue; fi
        if [[ $w == -* ]]; then
            [[ " ${_lxdlib_valued[$path]} " == *" $w "* ]] && ((i++))
            continue
        fi
        if [[ ${#pos[@]} -eq 0 && " ${_lxdlib_subs[$path]} " == *" $w "* ]]; then
            path="$path $w"
        else
            pos+=("$w")
        fi
    done
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "${_lxdlib_opts[$path]}" -- "$cur"))
        return 0
    fi
    if [[ ${#pos[@]} -eq 0 && -n ${_lxdlib_subs[$path]} ]]; then
        COMPREPLY=($(compgen -W "${_lxdlib_subs[$path]}" -- "$cur"))
        return 0
    fi
    local -a kinds
    local kind=""
    read -ra kinds <<< "${_lxdlib_pos[$path]}"  # not an unquoted expansion: "f*" would glob
    n=${#pos[@]}
    if ((n < ${#kinds[@]})); then
        kind="${kinds[n]}"
    elif ((${#kinds[@]} > 0)) && [[ ${kinds[-1]} == *'*' ]]; then
        kind="${kinds[-1]}"
    fi
    kind="${kind%\*}"
    case "$kind" in
        i) COMPREPLY=($(compgen -W "$(_lxdlib_instances "$root")" -- "$cur")) ;;
        p)
            if [[ $cur == */* ]]; then
                compopt -o default 2>/dev/null
            else
                compopt -o nospace 2>/dev/null
                COMPREPLY=($(compgen -W "$(_lxdlib_instances "$root")" -S / -- "$cur"))
            fi ;;
        c:*) kind="${kind#c:}"; COMPREPLY=($(compgen -W "${kind//|/ }" -- "$cur")) ;;
        n) ;;
        *) COMPREPLY=($(compgen -f -- "$cur")); compopt -o filenames 2>/dev/null ;;
    esac
    return 0
}
complete -F _lxdlib lxdlib
'''


def bash_script(parser: argparse.ArgumentParser) -> str:
    lines = ["# bash completion for lxdlib (generated by `lxdlib completion bash`)",
             "declare -gA _lxdlib_subs _lxdlib_opts _lxdlib_valued _lxdlib_pos"]
    for key, item in sorted(spec(parser).items()):
        k = shlex.quote(key)
        for var, field in (("_lxdlib_subs", "subs"), ("_lxdlib_opts", "opts"),
                           ("_lxdlib_valued", "valued"), ("_lxdlib_pos", "pos")):
            if item[field]:
                lines.append(f"{var}[{k}]={shlex.quote(item[field])}")
    return "\n".join(lines) + "\n" + _FUNCTION.lstrip("\n")


def _cmd_completion(parser: argparse.ArgumentParser, _host: object,
                    args: argparse.Namespace) -> int:
    print(bash_script(parser), end="")
    return 0


def register(sub: argparse._SubParsersAction,  # type: ignore[type-arg]
             parser: argparse.ArgumentParser) -> None:
    """Add the ``completion`` command to ``sub``; it prints the script made from ``parser``
    (the whole command's parser, complete by the time the command runs). Taking the parser
    rather than building it keeps this module below the one that assembles the command."""
    p = sub.add_parser("completion", help="print the shell completion script "
                       "(source <(lxdlib completion bash))")
    p.add_argument("shell", choices=("bash",))
    p.set_defaults(func=functools.partial(_cmd_completion, parser), no_host=True)

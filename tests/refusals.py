"""The refusals the conformance suites expect, pinned in tests/expected_refusals.toml: loading
a suite's section, checking one outcome against it, and drafting the groups of a section anew
(each suite's file prints them when run as a script)."""
import json
import re
import tomllib
from pathlib import Path

REFUSALS = Path(__file__).with_name("expected_refusals.toml")


def pinned_refusals(section, tests):
    """({test: {name: reason}}, names no test runs) of a section: each group's `cases` are
    refused by every test (of `tests`: {test: names it runs}) that runs them, its
    `<test>_only` by that test alone (the others take them)."""
    with REFUSALS.open("rb") as f:
        groups = tomllib.load(f)[section]
    pinned, unknown = {test: {} for test in tests}, []
    for group in groups:
        for key in ["cases"] + [f"{test}_only" for test in tests]:
            for name in group.get(key, []):
                runs = [t for t in (tests if key == "cases" else [key[:-len("_only")]]) if name in tests[t]]
                unknown += [] if runs else [name]
                for test in runs:
                    assert name not in pinned[test], f"{name} is pinned twice for {test} in {REFUSALS.name}"
                    pinned[test][name] = group["reason"]
    return pinned, unknown


def check_pinned(pinned, test, name, kind, message):
    """A refusal must be the one pinned for the name; a pinned name must still be refused."""
    reason = pinned[test].get(name)
    if kind == "refused":
        assert reason is not None, \
            f"{name}: refused, and {REFUSALS.name} does not pin it ({test}): {message}"
        assert re.search(reason, message), \
            f"{name}: the refusal no longer matches its pinned reason {reason!r}: {message}"
    else:
        assert reason is None, (f"{name}: goes through now, but {REFUSALS.name} pins its refusal "
                                f"({test}: {reason!r}): take it off the list")


def check_pinned_names(pinned, unknown):
    """Every pinned name is run by a test, and every reason is a valid regex."""
    assert not unknown, f"{REFUSALS.name} pins names the tests do not run (as listed): {unknown}"
    for by_name in pinned.values():
        for reason in by_name.values():
            re.compile(reason)


def toml_string(text):
    """A TOML literal string where it can be one (regexes read better without escapes)."""
    return f"'{text}'" if "'" not in text and "\n" not in text else json.dumps(text)


def draft_reason(message):
    """A first regex for a new refusal: its message with names, shapes and numbers left free."""
    parts = re.split(r"('[^']*'|\[[^\]]*\]|\d+)", message.split("; mcugen lowers:")[0])
    free = {"'": "'[^']*'", "[": r"\[[^]]*\]"}
    return "".join(free.get(p[0], r"\d+") if i % 2 else re.sub(r"([.^$*+?{}()|\\[\]])", r"\\\1", p)
                   for i, p in enumerate(parts))


def reason_for(message, pinned):
    """The pinned reason a message matches, else a draft of a new one."""
    reasons = dict.fromkeys(r for by_name in pinned.values() for r in by_name.values())
    return next((r for r in reasons if re.search(r, message)), None) or draft_reason(message)


def refusal_groups(section, refused, pinned, tests):
    """The [[section]] groups of tests/expected_refusals.toml for the refusals now ({test:
    {name: message}}; `tests`: {test: names it runs}): a name under the pinned reason its
    message matches, a new refusal under draft_reason (make that a short stable phrase, and
    decide whether it is a limitation or a bug)."""
    reasons = dict.fromkeys(r for by_name in pinned.values() for r in by_name.values())
    groups = {}
    for name in dict.fromkeys(n for names_ in tests.values() for n in names_):
        runs = [test for test in tests if name in tests[test]]
        found = {test: reason_for(refused[test][name], pinned) for test in runs if name in refused[test]}
        if len(found) == len(runs) and len(set(found.values())) == 1:
            groups.setdefault(found[runs[0]], {}).setdefault("cases", []).append(name)
            continue
        for test, why in found.items():
            groups.setdefault(why, {}).setdefault(f"{test}_only", []).append(name)
    out = []
    for why, lists in groups.items():
        text = "" if why in reasons else "# new: shorten the reason to a stable phrase\n"
        text += f"[[{section}]]\nreason = {toml_string(why)}\n"
        for key, names_ in lists.items():
            text += f"{key} = [\n" + "".join(f'    "{n}",\n' for n in names_) + "]\n"
        out.append(text)
    return "\n".join(out)



"""Record formats: how a record's fields become one text and how a generated text parses back.

    template   "Question: {question}\\nAnswer: {answer}": literals between named fields. Invertible by
               construction: every two adjacent fields are separated by a non-empty literal, each field
               appears once, and no format spec or conversion pads or rewrites a value.
    json       one JSON object per record holding exactly the declared fields, string values.

Parsing never guesses: a template is matched anchored, each field ending at the first occurrence of
the literal that follows it (the last field takes the rest), so `render(parse(text)) == text` for
every text that parses; a text that does not parse is a reject with a reason, never a record.

Generation starts after a forced prefix: the part of the record before its first generated field
(the template's leading literal, and the given fields' values with their literals), so the LM writes
the rest conditioned on it. Its trailing spaces are left to the LM: BPE vocabularies put the space
at the start of the next word's token.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass

from .errors import SynthsteerError


def template_fields(template: str) -> list[str]:
    """The row fields a template reads. Only plain named fields are allowed: `str.format` would
    otherwise evaluate attribute and index lookups (`{question.__class__}`) and nested fields."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as e:
        raise SynthsteerError(f"--template {template!r}: not a valid template ({e})") from None
    names = []
    for _, name, spec, _ in parts:
        if name is None:
            continue
        if name == "" or name.isdigit():
            raise SynthsteerError(f"--template {template!r}: use named fields like {{question}}, not positional ones")
        if not name.isidentifier():
            raise SynthsteerError(f"--template {template!r}: {{{name}}} is not a plain field name (no attributes or "
                                  "indexes)")
        if spec and "{" in spec:
            raise SynthsteerError(f"--template {template!r}: nested fields in a format spec are not allowed")
        if spec and re.search("[0-9]{5,}", spec):  # {question:>999999999} would pad every record to a gigabyte
            raise SynthsteerError(f"--template {template!r}: {{{name}:{spec}}} asks for a width or precision over 9999")
        names.append(name)
    if not names:
        raise SynthsteerError(f"--template {template!r}: names no field (use {{field}})")
    return names


KINDS = ("template", "json")
# a run's record keeps its fields as top-level keys beside these
RECORD_KEYS = ("id", "index", "text", "num_tokens", "finish", "provenance")


@dataclass(frozen=True)
class Unparsable:
    """Why a generated text is not a record."""

    reason: str


@dataclass(frozen=True)
class RecordFormat:
    """A record's fields and their rendering. `literals[i]` precedes `fields[i]`; `literals[-1]`
    follows the last field (template kind only)."""

    kind: str
    fields: tuple[str, ...]
    literals: tuple[str, ...] = ()

    @classmethod
    def template(cls, template: str, where: str = "--template") -> RecordFormat:
        """The format of `template`, refused in one line when it cannot be parsed back."""
        template_fields(template)  # the safety checks every template gets, with their own words
        try:
            parts = list(string.Formatter().parse(template))
        except ValueError as e:
            raise SynthsteerError(f"{where} {template!r}: not a valid template ({e})") from None
        literals, fields, pending = [], [], ""
        for literal, name, spec, conversion in parts:
            pending += literal
            if name is None:
                continue
            if not name.isidentifier():
                raise SynthsteerError(f"{where} {template!r}: {{{name}}} is not a plain field name")
            if spec or conversion:
                raise SynthsteerError(f"{where} {template!r}: {{{name}{'!' + conversion if conversion else ''}"
                                      f"{':' + spec if spec else ''}}} rewrites the value, so records would not parse "
                                      f"back; use {{{name}}}")
            if name in fields:
                raise SynthsteerError(f"{where} {template!r}: {{{name}}} appears twice; a record holds each field once")
            if fields and not pending:
                raise SynthsteerError(f"{where} {template!r}: {{{fields[-1]}}} and {{{name}}} are not separated by any "
                                      "text, so a record could not be split back into them; put a literal between")
            literals.append(pending)
            fields.append(name)
            pending = ""
        if not fields:
            raise SynthsteerError(f"{where} {template!r}: names no field (use {{field}})")
        return cls("template", tuple(fields), (*literals, pending))

    @classmethod
    def json(cls, fields: tuple[str, ...] | list[str], where: str = "--fields") -> RecordFormat:
        fields = tuple(fields)
        if not fields:
            raise SynthsteerError(f"{where}: name at least one field")
        for name in fields:
            if not isinstance(name, str) or not name or name != name.strip():
                raise SynthsteerError(f"{where}: {name!r} is not a field name")
        if len(set(fields)) < len(fields):
            raise SynthsteerError(f"{where}: a field is named twice")
        return cls("json", fields)

    @classmethod
    def from_dict(cls, d: dict, where: str) -> RecordFormat:
        """A format an artifact recorded (`as_dict`)."""
        if not isinstance(d, dict) or d.get("kind") not in KINDS:
            raise SynthsteerError(f"{where}: its recorded record format is not one synthsteer writes")
        if d["kind"] == "json":
            return cls.json(d.get("fields") or (), where)
        if not isinstance(d.get("template"), str):
            raise SynthsteerError(f"{where}: its recorded record format has no template")
        return cls.template(d["template"], where)

    def as_dict(self) -> dict:
        if self.kind == "json":
            return {"kind": "json", "fields": list(self.fields)}
        return {"kind": "template", "template": self.template_text}

    @property
    def template_text(self) -> str:
        esc = [lit.replace("{", "{{").replace("}", "}}") for lit in self.literals]
        return "".join(e + "{" + f + "}" for e, f in zip(esc, self.fields)) + esc[-1]

    def check_record_keys(self, where: str = "--template") -> None:
        clash = [f for f in self.fields if f in RECORD_KEYS]
        if clash:
            raise SynthsteerError(f"{where}: the field {clash[0]!r} would overwrite the record's own {clash[0]!r} "
                                  f"(records keep their fields beside {', '.join(RECORD_KEYS)}); use data whose "
                                  "columns are named otherwise")

    def check_given(self, given: tuple[str, ...], where: str = "--given") -> None:
        """Given fields must come first: the LM is fed them and writes the rest."""
        for name in given:
            if name not in self.fields:
                raise SynthsteerError(f"{where} {name}: not a field of the record format ({', '.join(self.fields)})")
        if tuple(self.fields[: len(given)]) != tuple(sorted(given, key=self.fields.index)):
            raise SynthsteerError(f"{where} {','.join(given)}: given fields must come first in the record "
                                  f"({', '.join(self.fields)}): the LM writes what follows them")
        if len(given) == len(self.fields):
            raise SynthsteerError(f"{where} {','.join(given)}: every field is given; leave at least one to generate")

    def render(self, values: dict) -> str:
        if self.kind == "json":
            return json.dumps({f: values[f] for f in self.fields}, ensure_ascii=False)
        return "".join(lit + str(values[f]) for lit, f in zip(self.literals, self.fields)) + self.literals[-1]

    def forced_prefix(self, given: dict) -> str:
        """The record's text before its first generated field (the given fields are its first ones),
        without trailing spaces."""
        if self.kind == "json":
            head = ", ".join(f"{json.dumps(f)}: {json.dumps(given[f], ensure_ascii=False)}" for f in self.fields
                             if f in given)
            first = self.fields[len(given)]
            return "{" + (head + ", " if head else "") + json.dumps(first) + ': "'
        k = len(given)
        text = "".join(lit + str(given[f]) for lit, f in zip(self.literals[:k], self.fields[:k]))
        return (text + self.literals[k]).rstrip(" ")

    def tail_regex(self, given: int = 0, values: dict[str, tuple[str, ...]] | None = None,
                   longest: dict[str, int] | None = None) -> str:
        """A regex of what may follow the forced prefix (`forced_prefix` of the first `given` fields) in a
        record that parses, the same for every record of a run whatever its given values, so one grammar
        serves them all. Each generated field is non-empty; a template field before a literal holds no
        character that literal starts with (so it ends where the literal first occurs, as `parse`
        splits) and a json string no more than `longest[field]` characters, so its end comes in time;
        a field of `values` is one of them."""
        values, longest = values or {}, longest or {}
        if self.kind == "json":
            return self._json_tail(given, values, longest)
        lit = self.literals[given]
        out = [_escape(lit[len(lit.rstrip(" ")):])]  # the spaces the forced prefix leaves to the LM
        for i in range(given, len(self.fields)):
            name, after = self.fields[i], self.literals[i + 1]
            if name in values:
                out.append("(" + "|".join(_escape(v) for v in values[name]) + ")")
            elif i + 1 < len(self.fields):
                bound = f"{{1,{longest[name]}}}" if name in longest else "+"
                out.append(f"[^{_escape(after[0], in_class=True)}]{bound}")
            else:
                out.append(r"[\s\S]+")
            out.append(_escape(after) if after.strip() or i + 1 < len(self.fields) else "")
        return "".join(out)

    def _json_tail(self, given: int, values: dict, longest: dict) -> str:
        # the forced prefix ends inside the first generated field's opening quote
        char = r'([^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})'
        out = []
        for i in range(given, len(self.fields)):
            name = self.fields[i]
            if name in values:
                out.append("(" + "|".join(_escape(json.dumps(v, ensure_ascii=False)[1:-1]) for v in values[name]) + ")")
            else:
                out.append(char + (f"{{1,{longest[name]}}}" if name in longest else "+"))
            out.append(_escape(f'", {json.dumps(self.fields[i + 1])}: "') if i + 1 < len(self.fields) else _escape('"}'))
        return "".join(out)

    def parse(self, text: str) -> dict[str, str] | Unparsable:
        """The fields of `text`, or why it is not a record."""
        return self._parse_json(text) if self.kind == "json" else self._parse_template(text)

    def _parse_template(self, text: str) -> dict[str, str] | Unparsable:
        lits, fields = self.literals, self.fields
        if not text.startswith(lits[0]):
            return Unparsable(f"missing the start {lits[0]!r}")
        at, values = len(lits[0]), {}
        for i, name in enumerate(fields[:-1]):
            end = text.find(lits[i + 1], at)
            if end < 0:
                return Unparsable(f"missing {lits[i + 1].strip() or lits[i + 1]!r}")
            values[name] = text[at:end]
            at = end + len(lits[i + 1])
        tail = lits[-1]
        # a trailing literal of white space is what generation strips; any other must be there
        if tail.strip():
            if not text.endswith(tail) or len(text) - len(tail) < at:
                return Unparsable(f"missing the end {tail!r}")
            values[fields[-1]] = text[at: len(text) - len(tail)]
        else:
            values[fields[-1]] = text[at:]
        return values

    def _parse_json(self, text: str) -> dict[str, str] | Unparsable:
        try:
            # strict=False: a raw control character inside a string (which grammar libraries let through) is
            # still that character; the record's own JSON line escapes it
            obj = json.loads(text, strict=False)
        except (ValueError, RecursionError):
            return Unparsable("not one JSON object")
        if not isinstance(obj, dict):
            return Unparsable("not one JSON object")
        if set(obj) != set(self.fields):
            missing, extra = set(self.fields) - set(obj), set(obj) - set(self.fields)
            what = [f"missing {', '.join(sorted(missing))}"] if missing else []
            return Unparsable("; ".join(what + ([f"extra {', '.join(sorted(extra))}"] if extra else [])))
        for name in self.fields:
            if not isinstance(obj[name], str):
                return Unparsable(f"{name} is not a string")
        return {name: obj[name] for name in self.fields}


_CONTROL = {"\n": r"\n", "\t": r"\t", "\r": r"\r"}


def _escape(text: str, in_class: bool = False) -> str:
    """`text` as a literal of the regex dialect grammar libraries share (no escaped spaces or dashes,
    which Python's `re.escape` writes and they refuse)."""
    special = "\\]^-" if in_class else "\\.^$|?*+()[]{}"
    return "".join(_CONTROL.get(ch) or ("\\" + ch if ch in special else ch) for ch in text)


def reject_reason(parsed: Unparsable, finish: str) -> str:
    """A reject's reason as the log line counts it: truncation first, for it explains the rest."""
    return "truncated at max-new-tokens" if finish == "length" else parsed.reason

"""Entities and noun phrases as things a step introduces and a later step uses.

A term is a named entity or noun phrase: from a trained spaCy pipeline when the recipe names one
(``steps.model``: its entities and noun chunks), otherwise from a cheap rule (capitalised word
sequences that do not open the sentence, and quoted spans). A step *defines* a term when it says
what the term is ("Koalas are herbivores.", "The Bandy Association governs …"): the term opens a
clause with a defining verb after it. Another step that mentions the term uses it — a weak
dependency (Need strength ENTITY), since mentioning is not always depending. Terms the question
already names are given, not introduced.
"""

from __future__ import annotations

import re

ENTITY = 0.25

_CAPITALISED = re.compile(r"(?<![.!?]\s)(?<!^)\b([A-Z][a-z]+(?:\s+(?:of|the|de|van|von)?\s*[A-Z][a-z]+)*)")
_QUOTED = re.compile(r"[\"“]([^\"”]{3,60})[\"”]")
_DEFINING = (r"(?:is|are|was|were|has|have|had|means|refers to|contains|consists of|governs|lives|lived|"
             r"became|includes|denotes|represents)")
_COMMON = {"The", "This", "That", "These", "Those", "Then", "Thus", "So", "Therefore", "Hence", "It", "He",
           "She", "They", "We", "I", "You", "A", "An", "In", "On", "At", "If", "When", "First", "Next",
           "Finally", "Answer", "Yes", "No", "Let", "Since", "Because", "But", "And", "Or", "For"}


def rule_terms(text: str) -> set[str]:
    """Capitalised names that do not open a sentence, and quoted spans (lowercased)."""
    out = {m.group(1) for m in _CAPITALISED.finditer(text) if m.group(1) not in _COMMON}
    out |= {m.group(1) for m in _QUOTED.finditer(text)}
    return {t.lower() for t in out if len(t) > 2}


def defined(text: str, terms: set[str]) -> set[str]:
    """The terms this step says something about: the term followed by a defining verb."""
    low = text.lower()
    return {t for t in terms if re.search(rf"\b{re.escape(t)}\b\s+{_DEFINING}\b", low)}


def mentions(text: str, term: str) -> bool:
    return re.search(rf"\b{re.escape(term)}\b", text.lower()) is not None

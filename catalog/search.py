"""Catalog search: find the right tool for an id, an action name or a plain need.

A small in-memory ranker, rebuilt when the catalog changes:
- text is cut into terms: English words are lower-cased and stemmed (Snowball),
  camelCase action names are split, Chinese runs become character bigrams;
- each service's fields are weighted (ids and name above keywords, keywords
  above the long description) and terms scored BM25-style (rare terms count more);
- query words the catalog does not know are matched to known words that share
  a stem prefix (recognize ~ recognition) or are a close spelling (celebrty);
- synonyms from search_vocabulary widen the query at a lower weight;
- a service is a result only when its matched terms carry a fair share of the
  query's information, so "weather forecast" finds nothing rather than noise.
matchScore, matchTerms and why describe that real match.
"""

import bisect
import functools
import math
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from typing import NamedTuple

import snowballstemmer
from rapidfuzz import fuzz, process

from catalog.documents import endpoints
from catalog.languages import CJK
from catalog.search_vocabulary import CHINESE_SYNONYMS, ENGLISH_STOPWORDS, ENGLISH_SYNONYMS

FIELD_WEIGHTS = {"ids": 3.0, "name": 3.0, "keywords": 2.5, "need": 2.0, "tags": 1.0, "description": 0.6}
SYNONYM_WEIGHT = 0.7
PREFIX_WEIGHT = 0.85
TYPO_MIN_RATIO = 80
EXACT_ID_BONUS = 100.0
# A need fits in a sentence; past this many distinct terms the rest is ignored,
# which bounds the work one request can ask for.
MAX_QUERY_TERMS = 32
# A result must match at least this share of the query's information and, when
# it leaves part of the query unanswered, this much information in all (about
# one moderately rare word): "read the text on this invoice" finds no face tool.
MIN_COVERAGE = 0.2
MIN_EVIDENCE = 4.0
# Chinese bigrams that straddle two words ("询异" in 查询异步) are mostly noise,
# so a bigram the catalog does not know carries a little information (enough
# that the query is not fully answered), and one holding a function character
# (这张, 几个, 图片) carries none.
UNKNOWN_CJK_SHARE = 0.1


CJK_STOP_CHARACTERS = frozenset("这那张个些里有是的了吗呢吧么什怎样我你他她它们帮请把给让能可以一下图片照像看")
CJK_CHARACTER_WEIGHT = 0.4

_STEMMER = snowballstemmer.stemmer("english")
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_TOKEN = re.compile(r"[a-z0-9]+|[\u3400-\u9fff]+")


@functools.lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    # The catalog's vocabulary is small and stemming is pure Python: memoize.
    return _STEMMER.stemWord(word)


def _normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", _CAMEL.sub(r"\1 \2", text)).lower()


class Term(NamedTuple):
    key: str  # what is looked up in the index
    surface: str  # what the caller typed, for matchTerms


@functools.lru_cache(maxsize=16384)
def terms(text: str, *, drop_stopwords: bool = False) -> tuple[Term, ...]:
    """Index terms of a text: stemmed English words, Chinese bigrams and characters.

    Memoized: field texts (tags, generic use cases, descriptions) repeat across services.
    """
    found = []
    for token in _TOKEN.findall(_normalize(text)):
        if CJK.match(token):
            found.extend(Term(token[i:i + 2], token[i:i + 2]) for i in range(len(token) - 1))
            # Single characters carry meaning in Chinese (瘦 in 把脸P瘦一点 ~ 瘦脸):
            # indexed beside the bigrams, and weighted down in search.
            found.extend(Term(char, char) for char in token if char not in CJK_STOP_CHARACTERS)
        elif not (drop_stopwords and token in ENGLISH_STOPWORDS):
            found.append(Term(_stem(token), token))
    return tuple(found)


@dataclass
class Entry:
    """One service as the index sees it."""

    service_id: str
    category: str
    identifiers: frozenset[str]
    phrases: tuple[str, ...]
    fields: dict[str, list[str]]


@dataclass
class Hit:
    service_id: str
    score: float
    match_terms: list[str] = field(default_factory=list)

    @property
    def match_score(self) -> int:
        return round(self.score * 10)


def entry_for(service) -> Entry:
    """Index fields of a catalog Service (or any object with its attributes)."""
    need = service.use_cases[0] if service.use_cases else ""
    identifiers = {service.id, service.internal_id, service.tool_name, service.upstream_action.lower(),
                   *endpoints(service).values()}
    phrases = [k.lower() for k in service.keywords if " " in k.strip() or CJK.search(k)]
    phrases += [service.name.lower(), service.id.replace("-", " ")]
    texts = {
        "ids": f"{service.id} {service.internal_id} {service.upstream_action}",
        "name": service.name,
        "keywords": " ".join(service.keywords),
        "need": need,
        "tags": " ".join([service.category, *service.tags]),
        "description": service.description,
    }
    return Entry(
        service_id=service.id,
        category=service.category,
        identifiers=frozenset(i.lower() for i in identifiers),
        phrases=tuple(dict.fromkeys(p for p in phrases if len(p) >= 2)),
        fields={name: [t.key for t in terms(text)] for name, text in texts.items()},
    )


class SearchIndex:
    def __init__(self, entries: list[Entry]):
        self.entries = entries
        self.categories = frozenset(e.category for e in entries)
        # One action name can stand for several services (GetAsyncJobResult of each product).
        self.by_identifier: dict[str, list[int]] = defaultdict(list)
        for index, entry in enumerate(entries):
            for identifier in entry.identifiers:
                self.by_identifier[identifier].append(index)
        # postings[term] = {entry index: weighted, saturated term frequency}
        self.postings: dict[str, dict[int, float]] = defaultdict(dict)
        for index, entry in enumerate(entries):
            for field_name, field_terms in entry.fields.items():
                counts: dict[str, int] = defaultdict(int)
                for key in field_terms:
                    counts[key] += 1
                for key, count in counts.items():
                    weight = FIELD_WEIGHTS[field_name] * count / (count + 1.2)
                    self.postings[key][index] = self.postings[key].get(index, 0.0) + weight
        total = len(entries)
        self.idf = {key: math.log(1 + (total - len(p) + 0.5) / (len(p) + 0.5)) for key, p in self.postings.items()}
        self.unknown_idf = math.log(1 + (total + 0.5) / 0.5)
        self.sorted_terms = sorted(k for k in self.postings if not CJK.match(k))
        self.spellings = {t.surface: t.key for e in entries for p in e.phrases for t in terms(p) if len(t.surface) > 3}
        self.spelling_list = list(self.spellings)

    def _prefix_matches(self, key: str) -> list[str]:
        """Known stems that extend `key` or that `key` extends (recogn ~ recognit)."""
        if len(key) < 5:
            return []
        start = bisect.bisect_left(self.sorted_terms, key)
        longer = []
        for candidate in self.sorted_terms[start:]:
            if not candidate.startswith(key):
                break
            longer.append(candidate)
        shorter = [key[:n] for n in range(5, len(key)) if key[:n] in self.postings]
        return longer + shorter

    def _typo_matches(self, surface: str) -> list[tuple[str, float]]:
        if len(surface) < 4 or CJK.match(surface):
            return []
        found = process.extract(surface, self.spelling_list, scorer=fuzz.ratio, score_cutoff=TYPO_MIN_RATIO, limit=2)
        return [(self.spellings[word], score / 100) for word, score, _ in found]

    def _information(self, term: Term, options: list[tuple[str, float]]) -> float:
        """How much a query term says about the need: the rarity of its best known form."""
        if CJK.match(term.surface) and CJK_STOP_CHARACTERS.intersection(term.surface):
            return 0.0
        known = [self.idf[key] * weight for key, weight in options if key in self.idf]
        if known:
            return max(known)
        return self.unknown_idf * (UNKNOWN_CJK_SHARE if CJK.match(term.surface) else 1.0)

    def _expand(self, query: str) -> tuple[dict[str, list[tuple[str, float]]], dict[str, float]]:
        """Query surfaces -> [(index key, weight)], and the information each surface carries."""
        expansions: dict[str, list[tuple[str, float]]] = {}
        information: dict[str, float] = {}
        for term in terms(query, drop_stopwords=True):
            if term.surface in expansions:
                continue
            if len(expansions) >= MAX_QUERY_TERMS:
                break
            options = []
            if term.key in self.postings:
                options.append((term.key, CJK_CHARACTER_WEIGHT if len(term.key) == 1 and CJK.match(term.key) else 1.0))
            options += [(k, PREFIX_WEIGHT) for k in self._prefix_matches(term.key) if k != term.key]
            if not options:
                options += self._typo_matches(term.surface)
            for synonym in ENGLISH_SYNONYMS.get(term.surface, []):
                options += [(t.key, SYNONYM_WEIGHT) for t in terms(synonym)]
            expansions[term.surface] = options
            information[term.surface] = self._information(term, options)
        # A Chinese phrase the vocabulary knows stands for a concept of its own:
        # its bigrams are explained by it, and it carries its own information.
        for word, synonyms in CHINESE_SYNONYMS.items():
            if word not in query:
                continue
            for gram in terms(word):
                information[gram.surface] = 0.0
            for synonym in synonyms:
                options = [(t.key, SYNONYM_WEIGHT) for t in terms(synonym)]
                expansions.setdefault(synonym, []).extend(options)
                information[synonym] = max((self.idf.get(k, 0.0) for k, _ in options), default=0.0)
        return expansions, information

    def search(self, query: str, *, category: str | None = None) -> list[Hit]:
        """Every matching service, best first."""
        normalized = _normalize(query).strip()
        scores: dict[int, float] = defaultdict(float)
        matched: dict[int, dict[str, float]] = defaultdict(dict)
        expansions, information = self._expand(query)
        total_information = sum(information.values())
        # MaxScore pruning: surfaces go from most to least informative; once the
        # ones left cannot lift a new service over MIN_COVERAGE, they only add to
        # services already found, so common words do not walk whole postings.
        ordered = sorted(expansions, key=lambda surface: -information.get(surface, 0.0))
        left = total_information
        for surface in ordered:
            open_to_new = not total_information or left / total_information >= MIN_COVERAGE
            left -= information.get(surface, 0.0)
            best: dict[int, float] = {}
            for key, weight in expansions[surface]:
                postings = self.postings.get(key)
                if not postings:
                    continue
                factor = self.idf[key] * weight
                if open_to_new or len(scores) > len(postings):
                    pairs = postings.items()
                else:
                    pairs = ((i, postings[i]) for i in scores if i in postings)
                for index, tf in pairs:
                    if open_to_new or index in scores:
                        value = factor * tf
                        if value > best.get(index, 0.0):
                            best[index] = value
            surface_information = information.get(surface, 0.0)
            for index, value in best.items():
                scores[index] += value
                matched[index][surface] = surface_information
        wanted = {normalized, normalized.replace(" ", ""), query.strip().lower()}
        exact = {index for w in wanted for index in self.by_identifier.get(w, ())}
        spaced = re.sub(r"[-_/]+", " ", normalized)
        hits = []
        for index in exact | set(scores):
            entry = self.entries[index]
            if category is not None and entry.category != category:
                continue
            is_exact = index in exact
            evidence = sum(matched[index].values())
            coverage = evidence / total_information if total_information else 0.0
            # Evidence matters only when part of the query went unanswered: "face"
            # alone is fully answered by every face tool, however common the word.
            # Stray Chinese characters (天 in 天气预报) never answer a query alone.
            answered = coverage >= 0.999 and any(len(s) > 1 or not CJK.match(s) for s in matched[index])
            if not is_exact and (coverage < MIN_COVERAGE or (not answered and evidence < MIN_EVIDENCE)):
                continue
            phrases = [p for p in entry.phrases if len(p) > 3 and p in spaced]
            # Coordination: a service that answers more of the query ranks above
            # one that answers one word of it many times.
            score = scores[index] * min(coverage, 1.0) + (EXACT_ID_BONUS if is_exact else 0.0) + 1.5 * len(phrases)
            words = [s for s in matched[index] if not any(s in p for p in phrases)]
            # A single Chinese character already inside a matched word adds nothing to the explanation.
            words = [w for w in words if not (len(w) == 1 and any(w in o for o in words if len(o) > 1))]
            surfaces = ([query.strip()] if is_exact else []) + phrases + words
            hits.append(Hit(entry.service_id, score, list(dict.fromkeys(surfaces))))
        hits.sort(key=lambda hit: (-hit.score, hit.service_id))
        return hits

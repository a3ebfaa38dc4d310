"""ESCO occupation names in 21 languages as training examples of both tasks (docs/labels.md, the ESCO section).

MELO's per-language files (`<id>\\t<name>`, `<id>\\t<ESCO URI>`) name every ESCO occupation and ISCO-08 group;
ESCO v1.2.0's `occupations_en.csv` gives each occupation its ISCO-08 unit group and English name. Department comes
from the group (extending the Dutch dev set's table, titlecat/esco.py), with a few occupations placed by their
English name; seniority from the level words each name carries, language by language. Names of the Dutch dev set's
concepts are never used, in any language. Each language and label is capped (seeded draw), and composed names
("Stagiaire comptable", "Senior vendedor") teach the Junior and Senior words that ESCO names rarely carry.
"""

from __future__ import annotations

import csv
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .esco import ISCO_DEPARTMENTS, OTHER_PREFIXES, read_esco_dev
from .labels import Task
from .readers import DataError, normalise_title

# MELO's folder of each language (shared/data/melo/README.md).
MELO_FOLDERS = {
    "bg": "bgr_q_bg_c_bg", "cs": "cze_q_cs_c_cs", "da": "dnk_q_da_c_da", "de": "deu_q_de_c_de",
    "en": "usa_q_en_c_en", "es": "esp_q_es_c_es", "et": "est_q_et_c_et", "fr": "fra_q_fr_c_fr",
    "hr": "hrv_q_hr_c_hr", "hu": "hun_q_hu_c_hu", "it": "ita_q_it_c_it", "lt": "ltu_q_lt_c_lt",
    "lv": "lva_q_lv_c_lv", "nl": "nld_q_nl_c_nl", "no": "nor_q_no_c_no", "pl": "pol_q_pl_c_pl",
    "pt": "prt_q_pt_c_pt", "ro": "rou_q_ro_c_ro", "sk": "svk_q_sk_c_sk", "sl": "svn_q_sl_c_sl",
    "sv": "swe_q_sv_c_sv",
}  # fmt: skip
NAMES_FILE = "corpus_elements.tsv"
MAPPING_FILE = "concept_mapping.tsv"
OCCUPATIONS_FILE = "occupations_en.csv"
ISCO_URI = re.compile(r"/esco/isco/C(\d+)$")

# Department: the Dutch dev set's table, and the groups docs/labels.md adds (a prefix stands for every group under it).
EXTRA_DEPARTMENT_GROUPS = {
    "Information Technology": ("2511", "2513", "1330", "3521", "3522", "214", "215", "311"),
    "Human Resources": ("2424", "4313"),
    "Administrative": ("1211", "2413", "3312", "3315", "4311", "4214", "4419", "334"),
    "Sales": ("2433", "2434", "3311", "3321", "3324", "3334", "5222", "5244"),
    "Customer Support": ("3512", "4211", "4223", "4224"),
    "Marketing": ("2432", "3332"),
    "Consulting": ("2421",),
    "Other": ("0", "11", "131", "132", "134", "211", "212", "213", "261", "262", "263", "265",
              "312", "313", "314", "315", "34", "432"),
}  # fmt: skip
# Occupations placed by their English preferred name, before their group (groups that split).
NAME_OVERRIDES = (
    (re.compile(r"project manager|project coordinator|programme manager", re.I), None, "Project Management"),
    (re.compile(r"business develop|fundrais", re.I), None, "Business Development"),
    (re.compile(r"\bsales\b", re.I), "1221", "Sales"),
    (re.compile(r"marketing", re.I), "1221", "Marketing"),
    (re.compile(r"purchas|procure|buyer|sourcing", re.I), "1324", "Purchasing"),
)
SPLIT_GROUPS_LEFT_OUT = ("1221",)  # what no override places is left out; 1324's rest is Other (logistics)
CULINARY_GROUPS = ("3434", "5120")  # chefs and cooks: Professional whatever their words
ART_DIRECTOR_GROUPS = ("2652", "2654")  # film, stage, music directors: left out of seniority


DEPARTMENT_RULES = ("wide", "narrow")


def department_of(isco_group: str, english_name: str, rule: str = "wide") -> str | None:
    """A concept's department by docs/labels.md: a name override, else its group; None = left out. The *narrow* rule
    is the Dutch dev set's table alone (no overrides, no added groups: rule 7's addendum, docs/multilingual.md)."""
    if rule == "narrow":
        for department, groups in ISCO_DEPARTMENTS.items():
            if isco_group in groups:
                return department
        return "Other" if isco_group.startswith(OTHER_PREFIXES) else None
    if rule != "wide":
        raise ValueError(f"department rule {rule!r}: expected one of {DEPARTMENT_RULES}")
    for pattern, group, department in NAME_OVERRIDES:
        if (group is None or isco_group == group) and english_name and pattern.search(english_name):
            return department
    if isco_group.startswith(SPLIT_GROUPS_LEFT_OUT):
        return None
    for department, groups in ISCO_DEPARTMENTS.items():
        if isco_group in groups:
            return department
    if isco_group.startswith(OTHER_PREFIXES):
        return "Other"
    matches = [
        (len(prefix), department)
        for department, prefixes in EXTRA_DEPARTMENT_GROUPS.items()
        for prefix in prefixes
        if isco_group.startswith(prefix)
    ]
    return max(matches)[1] if matches else None


# Seniority: each label's words, for every language ("*") and per language; checked in LEVEL_ORDER, first wins.
# A pattern matches a whole word or words of the name, any case (\w* admits a compound's front: Vertriebsleiter).
LEVEL_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "Junior": {
        "*": ("junior", "jr", "trainee", "intern", "internship", "apprentice", r"assistant\w*"),
        "de": (r"\w*assistent\w*", r"\w*praktikant\w*", r"auszubildende\w*", "azubi", r"\w*lehrling",
               r"werkstudent\w*", r"\w*helfer\w*", r"\w*aushilfe"),
        "fr": ("stagiaire", r"apprentie?", r"aide\b.*"),
        "es": ("pasante", r"becari[oa]", "aprendiz", "practicante", "asistente", r"ayudante"),
        "it": ("tirocinante", "stagista", "apprendista", r"assistente(?! social)", "aiuto"),
        "nl": (r"stagiaire?", "leerling", r"\w*assistente?"),
        "pl": (r"stażyst(a|ka)", r"praktykant(ka)?", r"asystent(ka)?", r"pomocni(k|czka)"),
        "pt": (r"estagiári[oa]", "aprendiz", r"assistente(?! social)", "ajudante"),
        "cs": (r"stážist(a|ka)", r"praktikant(ka)?", r"učeň", r"asistent(ka)?", r"pomocn(ík|ice)"),
        "sk": (r"stážist(a|ka)", r"praktikant(ka)?", r"učeň", r"asistent(ka)?", r"pomocn(ík|íčka)"),
        "hu": ("gyakornok", "tanonc", r"asszisztens\w*", r"\w*segéd\w*"),
        "ro": (r"stagiar[ăa]?", r"ucenic[ăa]?", r"asistent[ăa]?", r"ajutor"),
        "hr": (r"pripravni(k|ca)", r"šegrt", r"asistent(ica)?", r"pomoćni(k|ca)"),
        "sl": (r"pripravni(k|ca)", r"vajen(ec|ka)", r"asistent(ka)?", r"pomočni(k|ca)"),
        "lt": (r"praktikant(as|ė)", r"stažuotoj(as|a)", r"padėjėj(as|a)", r"asistent(as|ė)"),
        "lv": (r"praktikant(s|e)", r"māceklis", r"palīg(s|dze)", r"asistent(s|e)"),
        "et": ("praktikant", r"õpipoiss", "abiline", r"\w*assistent\w*"),
        "sv": ("praktikant", r"lärling", r"biträde", r"\w*assistent\w*"),
        "da": ("praktikant", r"lærling", r"medhjælper", r"\w*assistent\w*"),
        "no": ("praktikant", r"lærling", r"medhjelper", r"\w*assistent\w*"),
        "bg": (r"стажант(ка)?", r"чирак", r"асистент(ка)?", r"помощни(к|чка)"),
    },
    "Management": {
        "*": ("ceo", "chief executive", r"managing director", r"(vice[- ])?president\w*", "owner"),
        "de": (r"geschäftsführ\w*", r"vorstand\w*", r"generaldirektor\w*", r"präsident\w*", r"inhaber\w*"),
        "fr": (r"directeur général", r"directrice générale", r"présidente?", "pdg", r"gérante?"),
        "es": (r"directora? general", r"presidenta?", r"consejer[oa] delegad[oa]", "gerente general"),
        "it": ("amministratore delegato", r"direttore generale", r"direttrice generale", "presidente"),
        "pt": (r"diretora? geral", r"presidente"),
        "nl": ("algemeen directeur", r"directeur-generaal", r"bestuursvoorzitter"),
        "pl": (r"(wice)?prezes\w*", r"dyrektor(ka)? generaln[ya]"),
        "cs": (r"generální ředitel(ka)?", r"předsed(a|kyně) představenstva"),
        "sk": (r"generáln(y|a) riaditeľ(ka)?",),
        "hu": ("vezérigazgató", r"ügyvezető\w*"),
        "ro": ("director general", r"președinte", r"presedinte"),
        "hr": (r"generaln(i|a) direktor(ica)?", r"predsjedni(k|ca) uprave"),
        "sl": (r"generaln(i|a) direktor(ica)?", r"predsedni(k|ca) uprave"),
        "lt": (r"generalin(is|ė) direktori(us|ė)",),
        "lv": (r"ģenerāldirektor(s|e)", r"valdes priekšsēdētāj(s|a)"),
        "et": ("tegevjuht", "peadirektor", "juhatuse esimees"),
        "sv": (r"verkställande direktör", "vd"),
        "da": (r"administrerende direktør",),
        "no": (r"administrerende direktør", "daglig leder"),
        "bg": (r"изпълнителен директор", r"генерален директор", r"управител\w*"),
    },
    "Director": {
        "*": (r"directora?", r"\w*direktor\w*", r"\w*direktør\w*", r"\w*direktör\w*"),
        "fr": (r"directeur", r"directrice"),
        "it": (r"direttore", r"direttrice"),
        "pt": (r"diretora?",),
        "nl": (r"\w*directeur",),
        "pl": (r"dyrektor(ka)?",),
        "cs": (r"ředitel(ka)?",),
        "sk": (r"riaditeľ(ka)?",),
        "hu": (r"\w*igazgató\w*",),
        "ro": ("directoare",),
        "hr": (r"ravnatelj(ica)?",),
        "sl": (r"ravnatelj(ica)?",),
        "lt": (r"direktori(us|ė)",),
        "lv": (r"direktor(s|e)",),
        "bg": (r"директор\w*",),
    },
    "Lead": {
        "*": (r"head of", "head", r"team lead(er)?", r"supervisor\w*", "foreman", "forewoman"),
        "de": (r"\w*leiter(in)?", r"\w*leitung", r"vorarbeiter(in)?"),
        "fr": ("responsable", r"chef d(e|'|’)", r"cheffe d(e|'|’)", r"superviseu(r|se)", r"contremaîtresse?",
               r"encadrante?"),
        "es": (r"jef[ea]", "responsable", r"encargad[oa]", "capataz"),
        "it": ("responsabile", r"capo\w*", "supervisore", "dirigente", "preposto"),
        "nl": (r"\w*hoofd", r"\w*leider", r"leidinggevende", "voorman", "chef"),
        "pl": (r"kierowni(k|czka)\w*", r"szef(owa)?", "lider", r"brygadzist(a|ka)"),
        "pt": ("chefe", r"responsável", r"encarregad[oa]"),
        "cs": (r"vedoucí", r"předák"),
        "sk": (r"vedúc(i|a)",),
        "hu": ("vezető", r"(csoport|osztály|részleg|projekt|üzlet|iroda|műszak)vezető", r"\w*főnök\w*"),
        "ro": (r"[șş]ef\w*", "sef", r"responsabil[ăa]?", r"supervizor\w*"),
        "hr": (r"voditelj(ica)?", r"šef(ica)?", r"nadzorni(k|ca)"),
        "sl": ("vodja", r"šef(inja)?", r"nadzorni(k|ca)"),
        "lt": (r"vadov(as|ė)", r"vedėj(as|a)", r"viršinink(as|ė)"),
        "lv": (r"vadītāj(s|a)", r"priekšniek(s|ce)"),
        "et": ("juht", r"\w*juhataja", "meeskonnajuht", "projektijuht"),
        "sv": (r"\w*chef", "arbetsledare", r"förman"),
        "da": (r"\w*chef", "leder", r"(afdelings|team|projekt|salgs|butiks|kontor|produktions|lager)leder", "formand"),
        "no": (r"\w*sjef", "leder", r"(avdelings|team|prosjekt|salgs|butikk|kontor|produksjons|lager)leder", "formann"),
        "bg": (r"ръководител\w*", r"началник\w*", r"шеф\w*"),
    },
    "Senior": {
        "*": ("senior", r"sénior"),
        "en": ("principal",),
        "pl": (r"starsz(y|a)", r"główn(y|a)"),
    },
}  # fmt: skip
LEVEL_ORDER = ("Junior", "Management", "Director", "Lead", "Senior")


def _compile(words: tuple[str, ...]) -> re.Pattern:
    return re.compile(r"(?<!\w)(" + "|".join(words) + r")(?!\w)", re.IGNORECASE)


LEVEL_PATTERNS = {
    label: {lang: _compile(words) for lang, words in by_lang.items()} for label, by_lang in LEVEL_WORDS.items()
}


def level_words_of(label: str, lang: str) -> list[re.Pattern]:
    patterns = LEVEL_PATTERNS[label]
    return [patterns[key] for key in ("*", lang) if key in patterns]


def seniority_of(name: str, lang: str, isco_group: str) -> str | None:
    """A name's seniority by its level words (docs/labels.md); None = left out (an art's director)."""
    if isco_group.startswith(CULINARY_GROUPS):
        return "Professional"
    if isco_group.startswith(ART_DIRECTOR_GROUPS):
        return None
    for label in LEVEL_ORDER:
        if any(pattern.search(name) for pattern in level_words_of(label, lang)):
            return label
    return "Management" if isco_group.startswith("11") else "Professional"


# Composed names: a level word before a Professional name of the same language ("Stagiaire comptable").
COMPOSED_WORDS = {
    "Junior": {
        "*": ("Junior",),
        "de": ("Praktikant", "Werkstudent", "Junior"), "fr": ("Stagiaire", "Apprenti", "Junior"),
        "es": ("Pasante", "Becario", "Practicante"), "it": ("Tirocinante", "Stagista", "Junior"),
        "nl": ("Stagiair", "Junior"), "pl": ("Stażysta", "Praktykant", "Młodszy"),
        "pt": ("Estagiário", "Júnior"), "cs": ("Stážista", "Junior"), "sk": ("Stážista", "Junior"),
        "hu": ("Gyakornok", "Junior"), "ro": ("Stagiar", "Junior"), "hr": ("Pripravnik", "Junior"),
        "sl": ("Pripravnik", "Junior"), "lt": ("Praktikantas", "Jaunesnysis"), "lv": ("Praktikants", "Junior"),
        "et": ("Praktikant", "Nooremspetsialist"), "sv": ("Praktikant", "Junior"), "da": ("Praktikant", "Junior"),
        "no": ("Lærling", "Junior"), "bg": ("Стажант", "Младши"), "en": ("Intern", "Junior", "Trainee"),
    },
    "Senior": {
        "*": ("Senior",), "es": ("Senior", "Sénior"), "pt": ("Sénior", "Senior"), "pl": ("Starszy", "Senior"),
        "fr": ("Senior", "Sénior"),
    },
}  # fmt: skip


# Department's composed names: a level word that names no department before a name ("Asistente contable"), labelled
# with the name's department (rule 7's second addendum); other languages take their Junior words.
DEPARTMENT_COMPOSED_WORDS = {
    "de": ("Assistent", "Assistentin", "Leiter", "Praktikant"), "fr": ("Assistant", "Responsable", "Stagiaire"),
    "es": ("Asistente", "Jefe de", "Pasante"), "it": ("Assistente", "Responsabile", "Tirocinante"),
    "nl": ("Assistent", "Hoofd", "Stagiair"), "pl": ("Asystent", "Kierownik", "Stażysta"),
    "pt": ("Assistente", "Chefe de", "Estagiário"), "en": ("Assistant", "Head of", "Intern"),
}  # fmt: skip


def composed_words(label: str, lang: str) -> tuple[str, ...]:
    words = COMPOSED_WORDS[label]
    return words.get(lang, words["*"])


GENDERED_PAIR = re.compile(r"^([^/]{2,})/([^/]{2,})$")


def split_gendered(name: str) -> list[str]:
    """Both forms of a gendered pair ("Verkäufer/Verkäuferin"); "Verkäufer/in" and other slashes stay as written."""
    match = GENDERED_PAIR.match(name)
    if not match:
        return [name]
    first, second = match.group(1).strip(), match.group(2).strip()
    # A pair of forms: both whole words of 2+ letters sharing their first three letters (not "HR/Payroll").
    if len(second) < 4 or first[:3].casefold() != second[:3].casefold():
        return [name]
    return [first, second]


@dataclass(frozen=True)
class EscoName:
    text: str
    lang: str
    uri: str
    isco_group: str
    composed: bool = False


@dataclass
class EscoSource:
    """Every usable ESCO name of every language, with what was left out and why (before caps)."""

    names: list[EscoName] = field(default_factory=list)
    left_out: Counter = field(default_factory=Counter)
    dutch_dev_concepts: int = 0


def read_occupations(path: Path) -> dict[str, tuple[str, str]]:
    """ESCO v1.2.0 occupations: URI -> (ISCO-08 unit group, English preferred name)."""
    groups = {}
    try:
        with path.open(newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file, strict=True)
            missing = [column for column in ("conceptUri", "iscoGroup", "preferredLabel") if column not in
                       (reader.fieldnames or [])]  # fmt: skip
            if missing:
                raise DataError(path, "line 1", f"columns {missing} missing; header: {reader.fieldnames}")
            for row in reader:
                group = (row["iscoGroup"] or "").strip()
                if not group.isdigit():
                    where = f"line {reader.line_num}, field 'iscoGroup'"
                    raise DataError(path, where, f"not an ISCO-08 group: {group!r}")
                groups[row["conceptUri"].strip()] = (group, normalise_title(row["preferredLabel"]))
    except csv.Error as error:
        raise DataError(path, f"line {reader.line_num}", f"malformed CSV: {error}") from error
    return groups


def dutch_dev_uris(path: Path, seed: int) -> tuple[set[str], set[str]]:
    """The ESCO concepts (URIs) of the Dutch dev set, and its titles (case-folded), built as the dev set is."""
    examples, _ = read_esco_dev(path, seed)
    lines = {example.row for example in examples}
    uris = set()
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        for row in reader:
            if reader.line_num in lines:
                uris.add(row["conceptUri"].strip())
    return uris, {example.text.casefold() for example in examples}


def read_tsv(path: Path) -> list[tuple[int, str, str]]:
    """(line, id, value) of a MELO file; a line without exactly one tab is named."""
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataError(path, f"byte {error.start}", "not UTF-8 text") from error
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise DataError(path, f"line {number}", f"expected <id>\\t<value>, found {len(parts)} fields")
        rows.append((number, parts[0].strip(), parts[1]))
    return rows


def read_esco_source(melo_dir: Path, occupations_path: Path, dutch_dev_path: Path, seed: int,
                     languages: tuple[str, ...] = tuple(MELO_FOLDERS)) -> EscoSource:  # fmt: skip
    """Every ESCO name of `languages` with its concept's ISCO-08 group, less the Dutch dev set's concepts."""
    occupations = read_occupations(occupations_path)
    excluded_uris, excluded_titles = dutch_dev_uris(dutch_dev_path, seed)
    source = EscoSource(dutch_dev_concepts=len(excluded_uris))
    for lang in languages:
        folder = melo_dir / MELO_FOLDERS[lang]
        uris = {key: uri.strip() for _, key, uri in read_tsv(folder / MAPPING_FILE)}
        seen: set[str] = set()
        for line, key, raw in read_tsv(folder / NAMES_FILE):
            uri = uris.get(key)
            if uri is None:
                raise DataError(folder / NAMES_FILE, f"line {line}", f"id {key!r} is not in {MAPPING_FILE}")
            if uri in excluded_uris:
                source.left_out["a Dutch dev concept"] += 1
                continue
            isco = ISCO_URI.search(uri)
            group = isco.group(1) if isco else occupations.get(uri, ("", ""))[0]
            if not group:
                source.left_out["no ISCO-08 group (URI not in occupations_en.csv)"] += 1
                continue
            if len(group) < 4:
                source.left_out["an ISCO-08 group above unit level"] += 1
                continue
            for text in split_gendered(normalise_title(raw)):
                if not text:
                    source.left_out["empty name"] += 1
                elif text.casefold() in excluded_titles:
                    source.left_out["a Dutch dev title"] += 1
                elif text.casefold() in seen:
                    source.left_out["repeated in its language"] += 1
                else:
                    seen.add(text.casefold())
                    source.names.append(EscoName(text, lang, uri, group))
    return source


def english_names(occupations_path: Path) -> dict[str, str]:
    return {uri: name for uri, (_, name) in read_occupations(occupations_path).items()}


def label_names(
    source: EscoSource, task: Task, english: dict[str, str], department_rule: str = "wide"
) -> tuple[list[tuple[EscoName, str]], Counter]:
    """Each name with its label in `task` (docs/labels.md), and what the rule could not place, by reason."""
    labelled, left_out = [], Counter()
    for name in source.names:
        if task.name == "department":
            label = department_of(name.isco_group, english.get(name.uri, ""), department_rule)
            reason = f"ISCO-08 group {name.isco_group[:2]}xx not placed in a department"
        else:
            label = seniority_of(name.text, name.lang, name.isco_group)
            reason = "a film, stage or music director (no rank)"
        if label is None:
            left_out[reason] += 1
        else:
            labelled.append((name, label))
    return labelled, left_out


def compose(labelled: list[tuple[EscoName, str]], need: dict[tuple[str, str], int],
            rng: random.Random) -> list[tuple[EscoName, str]]:  # fmt: skip
    """Seniority: up to `need[(lang, level)]` composed names a language's Junior or Senior, a level word before a
    Professional name of the same language ("Stagiaire comptable")."""
    professional: dict[str, list[EscoName]] = {}
    for name, label in labelled:
        if label == "Professional" and not name.isco_group.startswith(CULINARY_GROUPS):
            professional.setdefault(name.lang, []).append(name)
    composed = []
    for (lang, level), count in sorted(need.items()):
        pool = professional.get(lang, [])
        for base in rng.sample(pool, min(count, len(pool))):
            word = rng.choice(composed_words(level, lang))
            # A Romance name follows the word in lower case ("Stagiaire comptable"); German nouns keep theirs.
            text = base.text[0].lower() + base.text[1:] if lang in ("fr", "es", "it", "pt") else base.text
            composed.append((EscoName(f"{word} {text}", lang, base.uri, base.isco_group, composed=True), level))
    return composed


def compose_departments(groups: dict[tuple[str, str], list[tuple[EscoName, str]]], count: int,
                        rng: random.Random) -> list[tuple[EscoName, str]]:  # fmt: skip
    """Department: up to `count` composed names a language and department, a level word before a name of it."""
    composed = []
    for (lang, label), group in sorted(groups.items()):
        words = DEPARTMENT_COMPOSED_WORDS.get(lang, composed_words("Junior", lang))
        for base, _ in rng.sample(group, min(count, len(group))):
            word = rng.choice(words)
            text = base.text[0].lower() + base.text[1:] if lang in ("fr", "es", "it", "pt") else base.text
            composed.append((EscoName(f"{word} {text}", lang, base.uri, base.isco_group, composed=True), label))
    return composed


def draw(source: EscoSource, task: Task, english: dict[str, str], cap: int, composed_share: float,
         seed: int, department_rule: str = "wide") -> tuple[list[tuple[EscoName, str]], dict]:  # fmt: skip
    """At most `cap` names a language and label (seeded), plus composed names: in seniority, Junior and Senior ones
    filling up to `composed_share` of the cap where ESCO's own fall short; in department, up to that share of the cap
    a language and department on top (rule 7's second addendum: not taken, share 0). And a report of what came in
    and what was left out."""
    rng = random.Random(seed)
    labelled, unplaced = label_names(source, task, english, department_rule)
    groups: dict[tuple[str, str], list[tuple[EscoName, str]]] = {}
    for name, label in labelled:
        groups.setdefault((name.lang, label), []).append((name, label))
    chosen: list[tuple[EscoName, str]] = []
    over_cap = 0
    for key in sorted(groups):
        group = groups[key]
        keep = rng.sample(group, cap) if len(group) > cap else group
        over_cap += len(group) - len(keep)
        chosen += keep
    need = {}
    if task.name == "seniority" and composed_share > 0:
        for lang in sorted({name.lang for name, _ in labelled}):
            for level in ("Junior", "Senior"):
                have = len(groups.get((lang, level), []))
                need[(lang, level)] = max(0, min(int(cap * composed_share), cap - have))
    if task.name == "department":
        composed = compose_departments(groups, int(cap * composed_share), rng) if composed_share > 0 else []
    else:
        composed = compose(labelled, need, rng)
    chosen += composed
    by_lang = Counter(name.lang for name, _ in chosen)
    report = {
        "task": task.name,
        "cap_per_language_and_label": cap,
        "composed_share": composed_share,
        **({"department_rule": department_rule} if task.name == "department" else {}),
        "seed": seed,
        "names": len(chosen),
        "composed": len(composed),
        "per_language": dict(sorted(by_lang.items())),
        "per_label": {label: sum(1 for _, lab in chosen if lab == label) for label in task.labels},
        "per_language_and_label": {
            lang: {label: sum(1 for n, lab in chosen if n.lang == lang and lab == label) for label in task.labels}
            for lang in sorted(by_lang)
        },
        "left_out": {
            **dict(source.left_out),
            **dict(unplaced),
            "over the cap of its language and label": over_cap,
        },
        "dutch_dev_concepts_left_out": source.dutch_dev_concepts,
    }
    return chosen, report

"""The curated prompt-injection and jailbreak rules (factor 10) that ``_guard_injection`` runs.

Each rule is a set of clauses; a clause is a regular expression over lower-case text plus the
literal trigger words it cannot match without. A clause's expression only runs in windows
around its triggers, so text without them costs a few substring searches. Words written in
another script are folded the way ``fold`` folds text (Cyrillic look-alikes, accents), so the
same clause matches both the text as written (lower-cased) and its folded form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from elevenfactor.governance._guard_normalize import fold

__all__ = ["INJECTION_RULES", "Clause", "Rule"]


@dataclass(frozen=True, slots=True)
class Clause:
    """``pattern`` (lower-case text) runs near any of ``triggers`` (lower-case substrings).
    ``raw`` clauses read the text as written (case, line breaks), never its folded form."""

    triggers: tuple[str, ...]
    pattern: re.Pattern[str]
    raw: bool = False


@dataclass(frozen=True, slots=True)
class Rule:
    """A named rule: ``injection.<name>``, a finding kind and why it fires (for people)."""

    name: str
    kind: str
    detail: str
    clauses: tuple[Clause, ...]


def _c(triggers: str, pattern: str, *, raw: bool = False, flags: int = 0) -> Clause:
    """A clause; ``triggers`` are space-separated, ``~`` stands for a space inside one."""
    words = tuple(
        t.replace("~", " ") if raw else fold(t.replace("~", " ")) for t in triggers.split()
    )
    return Clause(words, re.compile(pattern, flags), raw)


def _w(*words: str) -> str:
    """An alternation of literal words in their natural script, folded as ``fold`` folds."""
    return "(?:" + "|".join(re.escape(fold(w)).replace(r"\ ", r"\W+") for w in words) + ")"


_ANY = r"(?:\w+\W+)"
_DET = r"(?:(?:all|any|every|each|of|the|your|my|its|their|these|those|this|that)\W+)"
_VERBS = (
    "ignor disregard forget skip overrid overrul bypass neglect discard abandon aside "
    "stop~following not~follow n't~follow dont~follow"
)
_OVERRIDE_VERB = (
    r"(?:ignore|disregard|forget|skip|override|overrule|bypass|neglect|discard|abandon|"
    r"set\W+aside|stop\W+following|do\W+not\W+follow|don'?t\W+follow)"
)
_QUALIFIER = (
    r"(?:previous|prior|above|preceding|earlier|former|foregoing|initial|original|old|system|"
    r"developer|existing|given|current|all|your|any)"
)
_NOUN = (
    r"(?:\w*struct\w*|rules?|prompts?|directions?|directives?|guidelines?|guidance|commands?|"
    r"constraints?|restrictions?|orders?|programming|context|tasks?|polic(?:y|ies)|"
    r"safeguards?|filters?|configuration)"
)
_OVERRIDE = (
    _c(_VERBS, rf"\b{_OVERRIDE_VERB}\W+{_DET}{{0,3}}{_QUALIFIER}\W+{_ANY}{{0,2}}?{_NOUN}\b"),
    _c("stop~everything", r"\bstop\W+everything\b\W+(?:\w+\W+){0,3}?(?:print|say|output)\b"),
    _c(
        "ignor disregard forget",
        r"\b(?:ignore|disregard|forget)\W+(?:(?:all|everything|anything)\W+)?(?:of\W+)?"
        r"(?:(?:the|that|what\W+(?:was|is|you\W+were)\W+(?:said|written|told))\W+)?"
        r"(?:above|before|previously|so\W+far)\b",
    ),
    _c(
        "ignorier vergiss vergessen missacht",
        rf"\b(?:ignorier\w*|vergiss|vergessen\W+sie|missachte\w*)\W+{_ANY}{{0,3}}?"
        r"(?:vorherigen?|bisherigen?|obigen?|vorangegangenen?|vorhergehenden?|alle[ns]?|deine|"
        rf"ihre)\W+{_ANY}{{0,2}}?(?:anweisungen|instruktionen|befehle|regeln|vorgaben|aufgaben|"
        r"anordnungen)\b|\b(?:vergiss|vergessen\W+sie)\W+alles\W+(?:davor|zuvor|bisherige|vorher)",
    ),
    _c(
        "ignor oubli olvid descart dimentic esquec",
        rf"\b(?:ignore[rz]?|oublie[rz]?|ignora|olvida|olvide|descarta|dimentica|esqueca)\W+"
        rf"{_ANY}{{0,3}}?(?:instructions|consignes|regles|directives|instrucciones|reglas|"
        rf"indicaciones|directrices|istruzioni|regole|instrucoes|regras)\W+{_ANY}{{0,1}}?"
        r"(?:precedentes|anterieures|ci\W+dessus|initiales|anteriores|previas|precedenti|acima|"
        r"de\W+arriba)",
    ),
    _c(
        "игнорир забуд",
        _w("игнорируй", "игнорируйте", "проигнорируй", "забудь", "забудьте")
        + rf"\W+{_ANY}{{0,2}}?"
        + _w("предыдущие", "прошлые", "прежние", "все")
        + rf"\W+{_ANY}{{0,1}}?"
        + _w("инструкции", "указания", "правила", "команды"),
    ),
    _c(
        "忽略 无视 忽视 忘记 忘掉 無視 忘れ 무시 잊어",
        r"(?:忽略|无视|忽视|忘记|忘掉)(?:你)?(?:之前|以上|上面|上述|前面|先前|所有|一切)(?:的)?"
        r"(?:所有)?(?:的)?(?:指令|指示|说明|规则|提示|要求)|(?:以前|前|上記|これまで|先)の"
        r"(?:指示|命令|ルール|指令)を(?:すべて|全て)?(?:無視|忘れ)|"
        r"이전\s*(?:의\s*)?(?:모든\s*)?(?:지시|지침|명령|규칙)\w*\s*(?:무시|잊어)",
    ),
)

_PERSONA = (
    r"(?:dan|free|freed|jailbroken|unchained|unfiltered|uncensored|unrestricted|unlimited|evil|"
    r"amoral|unethical|in\W+(?:developer|dev|god|jailbreak|dan)\W+mode|no\W+longer|"
    r"not\W+bound|able\W+to\W+do\W+anything)"
)
_ROLE_HIJACK = (
    _c(
        "are~now 're~now anything",
        rf"\byou(?:\W+are|'re)\W+now\W+{_ANY}{{0,4}}?{_PERSONA}\b|\bdo\W+anything\W+now\b",
    ),
    _c(
        "longer",
        r"\byou\W+are\W+no\W+longer\W+(?:bound|restricted|limited|an\W+ai|chatgpt|an\W+assistant)",
    ),
    _c(
        "dan~mode dan~prompt dan~jailbreak as~dan are~dan stay~dan",
        r"\bdan\W+(?:mode|prompt|jailbreak)\b|\b(?:as|you\W+are|stay)\W+dan\b",
    ),
    _c("DAN", r"\bDAN\b(?=\W+(?:is|can|has|will|must|stands|which|mode|\d))", raw=True),
    _c(
        "mode",
        r"\b(?:chatgpt|gpt|ai|assistant|model|you)\W+(?:\w+\W+){0,3}?(?:developer|dev|god|debug|"
        r"sudo|jailbreak|dan|unrestricted)\W+mode\b|\b(?:developer|dev|god|jailbreak|dan)\W+mode"
        r"\W+(?:output|response|enabled|activated)",
    ),
    _c(
        "jailbr",
        r"\bjailbr(?:eak|oken)\w*\W+(?:mode|prompt|enabled|activated|persona|version)\b|"
        r"\b(?:you\W+are|you're|i\W+am)\W+(?:now\W+)?jailbroken\b|[\[(/]jailbr(?:eak|oken)\b",
    ),
    _c(
        "without ignoring regardless",
        r"\b(?:act|behave|respond|answer|pretend|roleplay|role\W+play|operate|reply)\w*\W+"
        r"(?:\w+\W+){0,8}?(?:without|with\W+no|free\W+(?:of|from)|ignoring|regardless\W+of)\W+"
        r"(?:any\W+)?(?:\w+\W+){0,2}?(?:restrictions?|filters?|filtering|limitations?|limits|"
        r"censorship|guidelines|rules|boundaries|morals?|ethics|safety|constraints|policies)",
    ),
    _c(
        "ethical moral content safety openai",
        r"\b(?:no|zero|without|free\W+from|not\W+bound\W+by|(?:does|do)(?:\W+not|n'?t)\W+have)\W+"
        r"(?:any\W+)?(?:ethical|moral|content|safety|openai)\W+(?:\w+\W+)?(?:guidelines|"
        r"restrictions|boundaries|limitations|policies|filters|principles|constraints|rules)",
    ),
    _c(
        "unfiltered uncensored amoral unrestricted unethical",
        r"\b(?:unfiltered|uncensored|amoral|unrestricted)\W+(?:ai|chatbot|model|assistant|"
        r"response|language\W+model|version|persona)\b|\b(?:amoral|unfiltered|uncensored|"
        r"unrestricted|unethical)\W+(?:and\W+)?(?:amoral|unfiltered|uncensored|unrestricted|"
        r"unethical)\b|\bpretend\W+(?:that\W+)?you\W+(?:are|have)"
        r"\W+(?:no|an?\W+(?:unfiltered|unrestricted|evil|uncensored))\b",
    ),
    _c(
        "limited bound restricted constrained abide confines stay moraliz",
        r"\b(?:not|never|no\W+longer)\W+(?:be\W+)?(?:limited|bound|restricted|constrained)\W+"
        r"(?:by|to)\W+(?:\w+\W+){0,3}?(?:openai|open\W+ai|rules|policies|guidelines|restrictions|"
        r"programming)|\b(?:does|do)\W+not\W+have\W+to\W+(?:abide|follow|comply)\W+(?:by|with)\W+"
        r"(?:\w+\W+){0,3}?(?:rules|policies|guidelines)|\bbroken\W+free\W+of\W+the\W+typical\W+"
        r"confines\b|\bstay\W+in\W+(?:\w+\W+){0,2}?mode\b|\bmoraliz\w*\W+rant\b",
    ),
    _c(
        "bist maintenant ahora d'ora",
        r"\b(?:du\W+bist\W+(?:jetzt|nun|ab\W+sofort)|ab\W+(?:jetzt|sofort)\W+bist\W+du|"
        r"tu\W+es\W+maintenant|ahora\W+eres|a\W+partir\W+de\W+ahora\W+eres|d'ora\W+in\W+poi\W+sei)"
        r"\W+(?:\w+\W+){0,3}?(?:dan|ohne|sans|sin|senza|unzensiert|libre|frei|jailbroken|bose|evil)",
    ),
)

_LEAK_OBJECT = (
    r"(?:system\W+(?:prompt|message|instructions?)|(?:initial|original|hidden|secret|starting|"
    r"confidential|internal)\W+(?:prompt|instructions?)|pre\W?prompt|prompt\W+texts?|"
    r"developer\W+(?:message|instructions?|prompt)|instructions\W+(?:you\W+were\W+given|above)|"
    r"(?:text|prompt|words|everything)\W+above)"
)
_PROMPT_LEAK = (
    _c(
        "prompt instruction system~message developer~message above",
        r"\b(?:reveal|print|repeat|show|output|display|tell|give|leak|dump|disclose|share|expose|"
        r"paste|recite|write\W+out|spell\W+out|read\W+back|echo|encode|translate|provide)\w*\W+"
        rf"(?:me\W+|us\W+)?{_ANY}{{0,3}}?(?:your|the|its|my)\W+{_ANY}{{0,2}}?{_LEAK_OBJECT}",
    ),
    _c(
        "instructions system directives initial",
        r"\bwhat\W+(?:is|are|were)\W+your\W+(?:\w+\W+){0,2}?(?:system\W+prompt|instructions|"
        r"initial\W+prompt|directives)\b",
    ),
    _c(
        "repeat with~'you with~\"you with~you with~“you",
        r"\brepeat\W+(?:the\W+|all\W+)?(?:words|text|everything|sentences?|lines?)\W+"
        r"(?:above|before)\b|\b(?:beginning|starting)\W+with\W+.?you\W+are\b",
    ),
    _c(
        "prompt anweisung systeme sistema 提示 指令",
        r"\b(?:zeig|gib|nenne|verrate|wiederhole)\w*\W+(?:\w+\W+){0,3}?(?:deinen?|ihren?|den|die)"
        r"\W+(?:system\W?prompt|systemanweisungen|anweisungen|prompt\W?texte?)|"
        r"\b(?:montre|affiche|revele|repete|donne)\w*\W+(?:\w+\W+){0,3}?(?:ton|votre|le|tes|vos)"
        r"\W+(?:prompt\W+systeme|instructions\W+(?:initiales|systeme))|"
        r"\b(?:muestra|revela|repite|dime)\w*\W+(?:\w+\W+){0,3}?(?:tu|el|tus)\W+"
        r"(?:prompt\W+del\W+sistema|instrucciones\W+(?:iniciales|del\W+sistema))|"
        r"(?:显示|输出|告诉我|重复|泄露|打印)(?:你的|你)?(?:系统提示词?|初始指令|原始指令|提示词)",
    ),
)

_ROLE_TAG = (
    _c(
        "<| [inst [/inst <<sys <</sys",
        r"<\|im_start\|>\s*(?:system|assistant|developer)|<\|im_end\|>|<\|(?:system|assistant|"
        r"user|endoftext|eot_id|start_header_id|end_header_id|begin_of_text|im_sep)\|>|"
        r"\[/?inst\]|<</?sys>>",
    ),
    _c(
        "<system </system <sys </sys <admin </admin <developer",
        r"</?(?:system|system_prompt|"
        r"sys|admin|developer)>",
    ),
    _c(
        "##",
        r"#{2,}\s*\(?(?:system|new\W+instructions?|admin|developer)(?:[\s_]+(?:message|prompt|"
        r"override|instructions?))?\)?\s*(?:\)|:)",
    ),
    _c(
        "override begin~admin begin~system begin~developer begin~root end~of",
        r"\bbegin\W+(?:admin|system|developer|root)\W+(?:override|mode|instructions?|prompt)\b|"
        r"\b(?:system|admin(?:istrator)?|developer|root)\W+override\W*(?::|-{2,}|\]|activated|enabled|engaged)"
        r"|\bend\W+of\W+(?:the\W+)?(?:system\W+)?(?:prompt|instructions)\b\W*(?:-{2,}|={2,}|\])",
    ),
    _c(
        "[system [admin [developer",
        r"\[(?:system|admin|developer)(?:\W+(?:message|note|override|"
        r"instructions?))?\]",
    ),
    _c(
        "system admin developer",
        r"(?:^|\n)[ \t]*(?:system|admin(?:istrator)?|developer)[ \t]*(?:message|note|prompt|"
        r"instructions?|override)?[ \t]*:[ \t]*(?:you|ignore|disregard|forget|new|important|"
        r"the\s+(?:assistant|ai|model)|assistant|from\s+now)",
        raw=True,
        flags=re.IGNORECASE,
    ),
)

_TOOL_HIJACK = (
    _c(
        "tool function command ~api plugin action",
        r"\b(?:call|invoke|run|execute|use|trigger)\W+(?:the\W+)?(?:[\w-]+\W+){0,2}?(?:tool|"
        r"function|command|api|plugin|action)\b[^.!?\n]{0,80}?\b(?:now|immediately|right\W+away|"
        r"at\W+once|without\W+(?:asking|confirm\w*|telling|notify\w*|check\w*))",
    ),
    _c(
        "authori approved consented confirmed permitted allowed agreed",
        r"\b(?:delete|remove|erase|wipe|drop|destroy|transfer|send|forward|email|upload|post|"
        r"exfiltrate|leak|pay|wire|grant|invite)\b[^.!?\n]{0,120}?\b(?:the\W+)?user\W+"
        r"(?:has\W+)?(?:already\W+)?(?:authori[sz]ed|approved|consented|confirmed|permitted|"
        r"allowed|agreed)",
    ),
    _c(
        "without~ask without~tell without~notif without~inform without~alert without~confirm"
        " without~check the~user tell~user inform~user notify~user the~human the~operator",
        r"\bwithout\W+(?:asking|telling|notifying|informing|alerting|confirming\W+with|checking"
        r"\W+with)\W+(?:the\W+)?(?:user|human|operator|owner)\b|\b(?:do\W+not|don'?t|never)\W+"
        r"(?:tell|inform|notify|alert|warn|mention\W+(?:this\W+)?to|reveal\W+(?:this\W+)?to)\W+"
        r"(?:the\W+)?(?:user|human|operator)\b",
    ),
)
_AI_ADDRESS = (
    _c(
        "if~you~are note~to note~for message~to message~for instructions~for instruction~for"
        " reading~this processing~this summarizing~this summarising~this parsing~this"
        " browsing~this analyzing~this analysing~this",
        r"\bif\W+you\W+are\W+an?\W+(?:ai|llm|language\W+model|assistant|chatbot|agent|bot)\b|"
        r"\b(?:note|message|instructions?)\W+(?:to|for)\W+(?:the\W+|any\W+)?(?:ai|llm|"
        r"assistant|chatbot|agent|language\W+model)s?\b|\b(?:ai|llm|assistant|agent|chatbot|"
        r"model)s?\W+(?:that\W+is\W+|who\W+is\W+)?(?:reading|processing|summari[sz]ing|parsing|"
        r"browsing|analy[sz]ing)\W+this\b",
    ),
    _c(
        "important",
        r"\bimportant\W+(?:message|instruction|note)s?\W+from\W+(?:me|the\W+user|your\W+"
        r"(?:user|owner|developer|admin))\b",
    ),
)

INJECTION_RULES: tuple[Rule, ...] = (
    Rule("override", "prompt_injection", "asks to ignore earlier instructions", _OVERRIDE),
    Rule(
        "role_hijack", "jailbreak", "persona or mode switch that lifts restrictions", _ROLE_HIJACK
    ),
    Rule("prompt_leak", "prompt_injection", "asks for the system prompt", _PROMPT_LEAK),
    Rule("role_tag", "prompt_injection", "chat-role or delimiter markup", _ROLE_TAG),
    Rule("tool_hijack", "prompt_injection", "steers tool use on its own authority", _TOOL_HIJACK),
    Rule("ai_address", "prompt_injection", "addresses the model reading it", _AI_ADDRESS),
)
"""The rules in the order ``find_injection`` reports them."""

"""Chinese full-text search over the published knowledge: jieba tokens, BM25 ranking, a confidence for the bot.

The index is built in memory from the published versions and rebuilt when the published set changes
(its signature is read from the database on every search, so every process sees a publish at once).
"""
import math
import re
import threading
from collections import Counter
from dataclasses import dataclass, field

K1, B = 1.5, 0.75
TITLE_WEIGHT, QUESTION_WEIGHT = 2, 2

# Words that carry no meaning for matching a question to an answer (particles, pronouns, fillers).
STOPWORDS = frozenset("""
的 了 吗 呢 吧 啊 呀 哦 哈 嘛 么 是 我 你 他 她 它 我们 你们 在 有 和 与 及 或 就 都 也 还 又 把 被 给 让
这 那 这个 那个 怎么 怎样 怎么样 如何 什么 为什么 为啥 啥 咋 咋办 哪 哪里 哪儿 请问 请 麻烦 一下 下 能 能不能
可以 可不可以 会 要 想 想要 一个 个 没 没有 不 吧 嗯 额 呃 就是 然后 一直 现在 已经 还是 帮 帮忙 帮我 客服 亲 您好 你好
谢谢 好 好的 吗? 为 对 从 到 上 中 里 得 地 着 过 呗 啦 喔 诶 哎 求 急 急急 多久 多少 几 些
""".split())

_TOKEN_OK = re.compile(r"[\w\u4e00-\u9fff]", re.UNICODE)
_CJK_RUN = re.compile(r"[\u4e00-\u9fff]+")

# Words of a shop's service desk jieba's general dictionary splits apart (so "没到账" is 没/到账, not 没到/账).
DOMAIN_WORDS = ("到账", "转人工", "人工客服", "运费险", "价保", "红包", "成长值", "积分", "优惠券", "满减", "专票",
                "抬头", "税号", "补开", "换开", "退货", "换货", "退款", "漏发", "少发", "发错", "签收", "驿站",
                "快递柜", "改派", "催件", "支付密码", "提现", "自动续费", "付费会员", "注销", "花呗")
# single characters too common to make a bigram worth anything on their own
_FILLER = frozenset("的了吗呢吧啊呀哦我你他是在有不没就都也还要想能会这那怎么什啥咋个一下请")
_jieba = None
_jieba_lock = threading.Lock()


def _tokenizer():
    global _jieba
    if _jieba is None:
        with _jieba_lock:
            if _jieba is None:
                import logging

                import jieba
                jieba.setLogLevel(logging.WARNING)
                jieba.initialize()
                for word in DOMAIN_WORDS:
                    jieba.add_word(word, freq=20000)
                _jieba = jieba
    return _jieba


def tokens(text):
    """Search tokens of a text: jieba's search mode (words and their parts), lower-cased, stopwords removed,
    plus the character bigrams of each Chinese run (they survive typos and segmentation differences)."""
    jieba = _tokenizer()
    text = (text or "").lower()
    out = []
    for tok in jieba.lcut_for_search(text):
        tok = tok.strip()
        if not tok or tok in STOPWORDS or not _TOKEN_OK.search(tok):
            continue
        out.append(tok)
    for run in _CJK_RUN.findall(text):
        for i in range(len(run) - 1):
            gram = run[i:i + 2]
            if gram not in STOPWORDS and not (gram[0] in _FILLER and gram[1] in _FILLER):
                out.append("#" + gram)
    return out


@dataclass
class Doc:
    entry_id: int
    version: int
    title: str
    category: str
    tags: list
    body: str
    terms: Counter = field(default_factory=Counter)
    length: int = 0


class Index:
    """A BM25 index over a fixed set of documents."""

    def __init__(self, docs):
        self.docs = docs
        self.df = Counter()
        for d in docs:
            self.df.update(set(d.terms))
        self.n = len(docs)
        self.avgdl = (sum(d.length for d in docs) / self.n) if self.n else 1.0

    def idf(self, term):
        df = self.df.get(term, 0)
        return math.log(1 + (self.n - df + 0.5) / (df + 0.5))

    def score(self, doc, query_terms):
        s = 0.0
        for t in query_terms:
            f = doc.terms.get(t)
            if not f:
                continue
            s += self.idf(t) * f * (K1 + 1) / (f + K1 * (1 - B + B * doc.length / self.avgdl))
        return s

    def known_share(self, text):
        """The share of the query's character bigrams that occur anywhere in the knowledge (0..1): low for a
        question about something the knowledge never mentions (the weather, a film), whatever its words."""
        grams = {t for t in tokens(text) if t.startswith("#")}
        return sum(1 for t in grams if t in self.df) / len(grams) if grams else 0.0

    def search(self, text, limit=10, category=None, tag=None):
        """Ranked hits ``(doc, score, coverage, matched)``: coverage is the share of the query's word weight the
        doc matches, matched the number of the query's distinct tokens (words and bigrams) it contains."""
        q = list(dict.fromkeys(tokens(text)))
        if not q:
            return []
        # coverage counts words only (bigrams are for recall): an unknown word weighs like an average one,
        # a single character half as much (particles and typos jieba leaves alone)
        mean_idf = (sum(self.idf(t) for t in self.df) / len(self.df)) if self.df else 1.0
        weights = {t: (self.idf(t) if t in self.df else mean_idf) * (0.5 if len(t) == 1 else 1.0)
                   for t in q if not t.startswith("#")}
        total = sum(weights.values())
        hits = []
        for d in self.docs:
            if category and d.category != category:
                continue
            if tag and tag not in d.tags:
                continue
            s = self.score(d, q)
            if s > 0:
                covered = sum(w for t, w in weights.items() if t in d.terms)
                hits.append((d, s, covered / total if total else 0.0, sum(1 for t in q if t in d.terms)))
        hits.sort(key=lambda h: (-h[1], h[0].entry_id))
        return hits[:limit]


def document(entry_id, version, title, category, tags, body, questions):
    """A Doc with its term counts: the title and the user questions count double (they are how users ask)."""
    terms = Counter()
    for _ in range(TITLE_WEIGHT):
        terms.update(tokens(title))
    for q in questions:
        for _ in range(QUESTION_WEIGHT):
            terms.update(tokens(q))
    terms.update(tokens(" ".join(tags)))
    terms.update(tokens(category))
    terms.update(tokens(body))
    return Doc(entry_id, version, title, category, list(tags), body, terms, sum(terms.values()))


_cache = {"signature": None, "index": None}
_cache_lock = threading.Lock()


def current_index(signature, load):
    """The index for this published-set ``signature`` (``load()`` gives its Docs when it changed)."""
    with _cache_lock:
        if _cache["signature"] != signature or _cache["index"] is None:
            _cache["index"] = Index(load())
            _cache["signature"] = signature
        return _cache["index"]

"""Comment and repost text: organic chatter, common short phrases, and copy-paste spam.

Organic comments come from templates and vocabulary in Chinese and English, so many
differ and some collide by chance (as "太好看了！" does on a real platform). The common
phrases ("+1", "哈哈哈", "666" ...) are what many real people type; copy-paste spam is
one message repeated with the small edits that defeat exact-match dedup.
"""

from __future__ import annotations

import random

ZH_TOPICS = (
    "这个视频", "这篇文章", "博主", "这首歌", "画面", "这个观点", "这道菜", "你的分享",
    "这期内容", "这张照片", "小猫", "讲解", "结尾", "配乐", "剪辑", "这个方法",
)  # fmt: skip
ZH_VERDICTS = (
    "太好看了", "说得太对了", "真的很有用", "笑死我了", "好治愈", "学到了", "太真实了",
    "讲得很清楚", "有点意思", "看哭了", "绝了", "我不太同意", "值得收藏", "一般般吧",
    "比上一期好", "有点长了", "太专业了", "好温柔",
)  # fmt: skip
ZH_OPENERS = (
    "",
    "",
    "",
    "哇",
    "哈哈",
    "天哪",
    "说实话",
    "确实",
    "真的",
    "第一次看到",
    "终于等到了",
)
ZH_ENDINGS = ("", "", "！", "。", "!!", "～", "👍", "😂", "❤️", "[赞]", "[哭]", "？")
ZH_WHO = ("我妈", "室友", "同事", "男朋友", "女朋友", "我家孩子", "老板", "闺蜜")
ZH_THINGS = ("教程", "链接", "下一期", "原图", "BGM", "续集", "同款", "食谱")
ZH_PLACES = ("北京", "上海", "广州", "成都", "杭州", "武汉", "西安", "深圳", "长沙")
ZH_FEELINGS = ("很羡慕", "想去", "也遇到过", "太真实", "已经在路上了", "表示不服")

EN_THIS = ("this", "this video", "this post", "the ending", "that shot", "your explanation")
EN_ADJ = (
    "amazing", "so good", "underrated", "hilarious", "beautiful", "really helpful", "wild",
    "interesting", "spot on", "a bit long", "not convincing", "so calming",
)  # fmt: skip
EN_AFTER = ("", "", "more please", "saving this", "needed this today", "followed!", "wow")
EN_THINGS = ("recipe", "song", "link", "tutorial", "part 2", "original")
EN_WHO = ("mom", "roommate", "sister", "boss", "kids", "best friend")
EN_TRIED = ("this recipe", "the trick at the end", "this workout", "your setup", "this route")
EN_RESULT = ("actually worked", "did not work for me", "was harder than it looks", "loved it")
EN_WHEN = ("at 3am", "on the train", "in 2026", "during lunch", "instead of working")
ZH_WHEN = ("凌晨三点", "上班摸鱼", "地铁上", "午休", "睡前")
EN_ENDINGS = ("", "", "!", ".", "!!", " 😂", " 🔥", " ❤️", " :)")

# The short phrases of the `common_phrase` hard negative, each with the variants real
# people type.
COMMON_PHRASES: dict[str, tuple[str, ...]] = {
    "+1": ("+1", "+1", "+1!", "+1+1", "＋1"),
    "哈哈哈": ("哈哈哈", "哈哈哈哈", "哈哈哈哈哈哈", "哈哈", "哈哈哈😂"),
    "congrats!": ("congrats!", "Congrats!", "congrats!!", "congrats 🎉", "Congratulations!"),
    "好": ("好", "好!", "好好好", "好的"),
    "666": ("666", "6666", "666666", "666!", "666👍"),
    "赞": ("赞", "赞赞", "赞👍", "点赞", "赞！"),
    "nice": ("nice", "Nice!", "nice one", "nice!!", "NICE"),
    "lol": ("lol", "LOL", "lol 😂", "lmao", "lolol"),
}

_SPAM = (
    "这个{product}我用了一个月，效果真的太明显了，需要的私信我领优惠券{code}",
    "家人们谁懂啊，{product}今天直播间只要{price}元，手慢无！",
    "关注我每天分享{product}干货，互关必回～",
    "兼职日结{price}元，在家就能做，有意向的加我V：{code}",
    "I made ${price} this week working from home, check the link in my bio {code}",
    "This {product_en} changed my life!! DM me for a {price}% discount code",
)
_PRODUCTS = ("面膜", "精华液", "减肥茶", "蓝牙耳机", "理财课", "考研资料")
_PRODUCTS_EN = ("serum", "detox tea", "trading course", "phone case", "protein powder")
_EMOJI = ("🔥", "👍", "😊", "💯", "✨", "🙏", "❤️", "👇")
_FULL = {chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)}
_HALF = {v: k for k, v in _FULL.items()}
_PUNCT = {"，": ",", ",": "，", "！": "!", "!": "！", "。": ".", "～": "~", "~": "～", "：": ":"}

_REPOST_NOTES = (
    "转发",
    "//转发微博",
    "分享一下",
    "mark",
    "转给需要的人",
    "worth a read",
    "sharing",
)


def organic_comment(r: random.Random) -> str:
    """One organic comment, Chinese about two times in three."""
    if r.random() < 0.05:
        return common_phrase(r, r.choice(tuple(COMMON_PHRASES)))
    if r.random() < 0.65:
        form = r.random()
        if form < 0.55:
            text = f"{r.choice(ZH_OPENERS)}{r.choice(ZH_TOPICS)}{r.choice(ZH_VERDICTS)}"
        elif form < 0.7:
            text = f"已转给{r.choice(ZH_WHO)}，{r.choice(ZH_TOPICS)}{r.choice(ZH_VERDICTS)}"
        elif form < 0.82:
            text = f"求{r.choice(ZH_THINGS)}"
        elif form < 0.88:
            text = f"{r.choice(ZH_PLACES)}的朋友{r.choice(ZH_FEELINGS)}"
        elif form < 0.94:
            text = f"{r.choice(ZH_WHEN)}刷到，{r.choice(ZH_VERDICTS)}"
        else:
            text = f"第{r.randint(2, 30)}次看了，{r.choice(ZH_VERDICTS)}"
        return text + r.choice(ZH_ENDINGS)
    form = r.random()
    if form < 0.4:
        after = r.choice(EN_AFTER)
        text = f"{r.choice(EN_THIS)} is {r.choice(EN_ADJ)}" + (f", {after}" if after else "")
    elif form < 0.5:
        text = f"where can I find the {r.choice(EN_THINGS)}?"
    elif form < 0.6:
        text = f"my {r.choice(EN_WHO)} would love this"
    elif form < 0.68:
        text = f"watched this {r.randint(2, 20)} times"
    elif form < 0.78:
        text = f"{r.choice(EN_THIS)} made my day"
    elif form < 0.87:
        text = f"I tried {r.choice(EN_TRIED)} and it {r.choice(EN_RESULT)}"
    elif form < 0.95:
        text = f"who else is watching this {r.choice(EN_WHEN)}?"
    else:
        text = "thanks for sharing"
    if r.random() < 0.4:
        text = text[0].upper() + text[1:]
    return text + r.choice(EN_ENDINGS)


def common_phrase(r: random.Random, phrase: str) -> str:
    """A natural variant of one of the COMMON_PHRASES."""
    return r.choice(COMMON_PHRASES[phrase])


def repost_note(r: random.Random) -> str | None:
    """The optional text of a repost: most have none, some a note or a comment."""
    roll = r.random()
    if roll < 0.7:
        return None
    if roll < 0.88:
        return r.choice(_REPOST_NOTES)
    return organic_comment(r)


def spam_message(r: random.Random) -> str:
    """The base message of one copy-paste operation."""
    return r.choice(_SPAM).format(
        product=r.choice(_PRODUCTS),
        product_en=r.choice(_PRODUCTS_EN),
        price=r.choice((49, 99, 199, 300, 500, 800, 1200)),
        code=f"{r.choice('abcdefghjkmnpqrstwxyz')}{r.randint(100, 9999)}",
    )


def perturb(r: random.Random, message: str) -> str:
    """A near copy of `message`: punctuation, emoji, digits, width or character swaps,
    the edits spam operators make so each copy differs from the last."""
    text = message
    for _ in range(r.choice((0, 1, 1, 2, 2, 3))):
        edit = r.randrange(7)
        if edit == 0:
            text = "".join(_PUNCT.get(c, c) if r.random() < 0.5 else c for c in text)
        elif edit == 1:
            emoji = r.choice(_EMOJI) * r.randint(1, 3)
            text = text + emoji if r.random() < 0.7 else emoji + text
        elif edit == 2:
            digits = [i for i, c in enumerate(text) if c.isdigit()]
            if digits:
                i = r.choice(digits)
                text = text[:i] + str(r.randrange(10)) + text[i + 1 :]
            else:
                text += str(r.randint(1, 99))
        elif edit == 3:
            table = _FULL if r.random() < 0.6 else _HALF
            text = "".join(table.get(c, c) if r.random() < 0.5 else c for c in text)
        elif edit == 4 and len(text) > 3:
            i = r.randrange(len(text) - 1)
            text = text[:i] + text[i + 1] + text[i] + text[i + 2 :]
        elif edit == 5:
            i = r.randrange(len(text) + 1)
            text = text[:i] + r.choice((" ", "\u200b", "　")) + text[i:]
        else:
            text += r.choice(("!", "！", "~", "。。", "!!!"))
    return text

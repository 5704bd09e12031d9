"""A city-shaped demo directory: 93 units (78 city-level, 15 townships), 2,700 staff.

Names are realistic Chinese names with pinyin addresses (given.family@domain); passwords
are random and written to a CSV file (address,password) that the load harness reads.
Deterministic for a given seed.
"""

from __future__ import annotations

import csv
import io
import random
import secrets
import string
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from directory.service import DirectoryService

# (code, name) of city-level units: party committee, people's congress, government, CPPCC
# and their departments.
CITY_UNITS: list[tuple[str, str]] = [
    ("party-office", "市委办公室"), ("org-dept", "市委组织部"), ("propaganda", "市委宣传部"),
    ("united-front", "市委统战部"), ("political-legal", "市委政法委"), ("discipline", "市纪委监委"),
    ("party-school", "市委党校"), ("party-history", "市委党史研究室"), ("archives", "市档案馆"),
    ("npc-office", "市人大常委会办公室"), ("npc-legal", "市人大法制委员会"),
    ("npc-finance", "市人大财政经济委员会"), ("cppcc-office", "市政协办公室"),
    ("cppcc-proposals", "市政协提案委员会"), ("gov-office", "市人民政府办公室"),
    ("development", "市发展和改革局"), ("education", "市教育体育局"), ("science", "市科学技术局"),
    ("industry", "市工业和信息化局"), ("ethnic", "市民族宗教事务局"), ("public-security", "市公安局"),
    ("civil-affairs", "市民政局"), ("justice", "市司法局"), ("finance", "市财政局"),
    ("hr-social", "市人力资源和社会保障局"), ("natural-resources", "市自然资源局"),
    ("ecology", "市生态环境局"), ("housing", "市住房和城乡建设局"), ("transport", "市交通运输局"),
    ("water", "市水务局"), ("agriculture", "市农业农村局"), ("commerce", "市商务局"),
    ("culture-tourism", "市文化和旅游局"), ("health", "市卫生健康局"),
    ("veterans", "市退役军人事务局"), ("emergency", "市应急管理局"), ("audit", "市审计局"),
    ("state-assets", "市国有资产监督管理局"), ("market-regulation", "市市场监督管理局"),
    ("statistics", "市统计局"), ("medical-security", "市医疗保障局"), ("forestry", "市林业和草原局"),
    ("gov-services", "市政务服务管理局"), ("big-data", "市大数据中心"), ("info-centre", "市信息中心"),
    ("stats", "市统计调查队"), ("taxation", "市税务局"), ("court", "市人民法院"),
    ("procuratorate", "市人民检察院"), ("letters-visits", "市信访局"), ("urban-mgmt", "市城市管理局"),
    ("rural-revival", "市乡村振兴局"), ("energy", "市能源局"), ("tobacco", "市烟草专卖局"),
    ("post", "市邮政管理局"), ("meteorology", "市气象局"), ("earthquake", "市防震减灾局"),
    ("fire", "市消防救援大队"), ("federation-trade", "市总工会"), ("youth-league", "团市委"),
    ("women", "市妇女联合会"), ("federation-arts", "市文学艺术界联合会"), ("sci-assoc", "市科学技术协会"),
    ("disabled", "市残疾人联合会"), ("red-cross", "市红十字会"), ("supply-coop", "市供销合作社"),
    ("housing-fund", "市住房公积金管理中心"), ("radio-tv", "市融媒体中心"), ("library", "市图书馆"),
    ("hospital", "市人民医院"), ("cdc", "市疾病预防控制中心"), ("no1-middle", "市第一中学"),
    ("vocational", "市职业高级中学"), ("investment", "市投资促进局"), ("border-trade", "市口岸办公室"),
    ("park-admin", "市工业园区管理委员会"), ("gazetteer", "市地方志办公室"), ("secrecy", "市保密局"),
]

TOWNSHIPS: list[tuple[str, str]] = [
    ("town-lucheng", "鹿城镇"), ("town-shuanghe", "双河镇"), ("town-qinglong", "青龙镇"),
    ("town-baishui", "白水镇"), ("town-yunlong", "云龙乡"), ("town-dashan", "大山乡"),
    ("town-hongyan", "红岩镇"), ("town-songlin", "松林乡"), ("town-jinsha", "金沙镇"),
    ("town-longtan", "龙潭乡"), ("town-xinjie", "新街镇"), ("town-mashan", "马山乡"),
    ("town-heping", "和平镇"), ("town-shangba", "上坝乡"), ("town-caoba", "草坝镇"),
]

SURNAMES: list[tuple[str, str]] = [
    ("王", "wang"), ("李", "li"), ("张", "zhang"), ("刘", "liu"), ("陈", "chen"), ("杨", "yang"),
    ("赵", "zhao"), ("黄", "huang"), ("周", "zhou"), ("吴", "wu"), ("徐", "xu"), ("孙", "sun"),
    ("胡", "hu"), ("朱", "zhu"), ("高", "gao"), ("林", "lin"), ("何", "he"), ("郭", "guo"),
    ("马", "ma"), ("罗", "luo"), ("梁", "liang"), ("宋", "song"), ("郑", "zheng"), ("谢", "xie"),
    ("韩", "han"), ("唐", "tang"), ("冯", "feng"), ("于", "yu"), ("董", "dong"), ("萧", "xiao"),
    ("程", "cheng"), ("曹", "cao"), ("袁", "yuan"), ("邓", "deng"), ("许", "xu"), ("傅", "fu"),
    ("沈", "shen"), ("曾", "zeng"), ("彭", "peng"), ("吕", "lv"), ("苏", "su"), ("卢", "lu"),
    ("蒋", "jiang"), ("蔡", "cai"), ("贾", "jia"), ("丁", "ding"), ("魏", "wei"), ("薛", "xue"),
    ("叶", "ye"), ("段", "duan"), ("普", "pu"), ("杞", "qi"), ("字", "zi"), ("李", "li"),
]

GIVEN: list[tuple[str, str]] = [
    ("伟", "wei"), ("芳", "fang"), ("娜", "na"), ("敏", "min"), ("静", "jing"), ("丽", "li"),
    ("强", "qiang"), ("磊", "lei"), ("军", "jun"), ("洋", "yang"), ("勇", "yong"), ("艳", "yan"),
    ("杰", "jie"), ("娟", "juan"), ("涛", "tao"), ("明", "ming"), ("超", "chao"), ("秀", "xiu"),
    ("霞", "xia"), ("平", "ping"), ("刚", "gang"), ("桂", "gui"), ("英", "ying"), ("华", "hua"),
    ("玉", "yu"), ("兰", "lan"), ("建", "jian"), ("国", "guo"), ("文", "wen"), ("海", "hai"),
    ("云", "yun"), ("红", "hong"), ("春", "chun"), ("志", "zhi"), ("宇", "yu"), ("晨", "chen"),
    ("欣", "xin"), ("悦", "yue"), ("浩", "hao"), ("琳", "lin"), ("婷", "ting"), ("雪", "xue"),
    ("鹏", "peng"), ("斌", "bin"), ("辉", "hui"), ("林", "lin"), ("峰", "feng"), ("梅", "mei"),
    ("德", "de"), ("荣", "rong"), ("成", "cheng"), ("瑞", "rui"), ("佳", "jia"), ("慧", "hui"),
]

TITLES = ["科员", "副科长", "科长", "副主任", "主任", "办事员", "副局长", "局长", "干事", "专员"]


def units() -> list[tuple[str, str, bool]]:
    """All 93 units as (code, name, township)."""
    return [(c, n, False) for c, n in CITY_UNITS] + [(c, n, True) for c, n in TOWNSHIPS]


def _password(rng: random.Random) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(rng.choice(alphabet) for _ in range(10)) + rng.choice("!#%+") + str(rng.randint(10, 99))


def people(domain: str, count: int = 2700, seed: int | None = 7) -> list[dict[str, str]]:
    """`count` accounts spread over the units, each unit with one unit-admin and two clerks."""
    rng = random.Random(seed if seed is not None else secrets.randbits(64))
    all_units = units()
    used: set[str] = set()
    out: list[dict[str, str]] = []
    for i in range(count):
        code = all_units[i % len(all_units)][0]
        nth = i // len(all_units)
        fam_zh, fam_py = rng.choice(SURNAMES)
        parts = [rng.choice(GIVEN) for _ in range(rng.choice((1, 2, 2)))]
        given_zh = "".join(p[0] for p in parts)
        given_py = "".join(p[1] for p in parts)
        base = f"{given_py}.{fam_py}"
        local, n = base, 1
        while local in used:
            n += 1
            local = f"{base}{n}"
        used.add(local)
        role = "unit-admin" if nth == 0 else ("clerk" if nth in (1, 2) else "staff")
        out.append({"address": f"{local}@{domain}", "name": fam_zh + given_zh, "unit": code,
                    "title": rng.choice(TITLES), "role": role, "password": _password(rng)})
    return out


def people_csv(rows: list[dict[str, str]]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["address", "name", "unit", "title", "role", "password"],
                       lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def passwords_csv(rows: list[dict[str, str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["address", "password", "unit"])
    for r in rows:
        w.writerow([r["address"], r["password"], r["unit"]])
    return buf.getvalue()


async def seed(service: DirectoryService, count: int = 2700, seed_value: int | None = 7,
               progress: Callable[[str, int, int], None] | None = None) -> tuple[int, list[dict[str, str]]]:
    """Create the demo units (those missing) and `count` accounts; return (units added, rows)."""
    from cxkernel.errors import Invalid
    from directory.importer import import_users

    existing = {u.code for u in await service.list_units()}
    added = 0
    for code, name, township in units():
        if code not in existing:
            await service.add_unit(code, name, township=township)
            added += 1
    rows = people(service.domain, count, seed_value)
    report = await import_users(service, people_csv(rows), progress=progress)
    if not report.ok:
        line, reason = report.errors[0]
        raise Invalid(f"demo seed failed at row {line}: {reason} ({len(report.errors)} errors;"
                      " is the directory already seeded?)")
    return added, rows


"""The report as one HTML page: inline CSS, images as data URIs, no script, no request.

Rendered with Jinja2 (a dependency of MLflow's server, declared by vogflow) with autoescaping
on: every value from a table or a file reaches the page escaped, so a path or a class name
holding ``<`` cannot change the page. Laid out for a laptop screen and a narrow window alike:
examples flow in grids that wrap, wide tables scroll inside their own box.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from vogflow.common.atomic import write_text
from vogflow.report.content import Report

CSS = """
:root { --fg: #1d2330; --muted: #5b6475; --line: #dde1e8; --bg: #f6f7f9; --accent: #2456a6;
  --ok: #1e7a3c; --bad: #b3261e; --unsure: #8a6100; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  "Liberation Sans", "DejaVu Sans", sans-serif;
  color: var(--fg); background: #fff; }
header { background: var(--bg); border-bottom: 1px solid var(--line); }
header .wrap, main { max-width: 1180px; margin: 0 auto; padding: 14px 20px; }
main > section:first-of-type > h2 { border-top: 0; margin-top: 6px; }
h1 { font-size: 1.45em; margin: 0 0 6px; line-height: 1.25; overflow-wrap: anywhere; }
h2 { font-size: 1.2em; margin: 30px 0 8px; padding-top: 8px; border-top: 1px solid var(--line); }
h3 { font-size: 1.02em; margin: 18px 0 6px; }
p { margin: 6px 0; }
.muted { color: var(--muted); }
.facts { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr));
  gap: 2px 18px; margin: 8px 0 0; }
.facts div { min-width: 0; overflow-wrap: anywhere; }
.facts dt { font-size: .78em; text-transform: uppercase; letter-spacing: .04em;
  color: var(--muted); }
.facts dd { margin: 0 0 6px; font-weight: 600; }
.glance { display: flex; flex-wrap: wrap; gap: 8px; margin: 10px 0 2px; padding: 0;
  list-style: none; }
.glance li { background: #fff; border: 1px solid var(--line); border-radius: 6px;
  padding: 4px 10px; }
nav { font-size: .9em; margin-top: 8px; display: flex; flex-wrap: wrap; gap: 2px 14px; }
nav a { white-space: nowrap; }
a { color: var(--accent); }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: .92em; min-width: 100%; }
th, td { text-align: left; padding: 4px 10px 4px 0; border-bottom: 1px solid var(--line);
  vertical-align: top; }
td:first-child { overflow-wrap: anywhere; }
table.compact { min-width: 0; }
th { font-weight: 600; color: var(--muted); white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num, td.interval { white-space: nowrap; overflow-wrap: normal; }
.verdict { font-weight: 700; white-space: nowrap; }
.supported { color: var(--ok); }
.contradicted { color: var(--bad); }
.inconclusive { color: var(--unsure); }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(86px, 1fr));
  gap: 8px; list-style: none; padding: 0; margin: 6px 0; }
.cards.wide { grid-template-columns: repeat(auto-fill, minmax(160px, 1fr)); }
.cards li { border: 1px solid var(--line); border-radius: 6px; padding: 6px; min-width: 0;
  font-size: .84em; line-height: 1.35; overflow-wrap: anywhere; }
.cards img { display: block; width: 64px; height: 64px; object-fit: contain;
  image-rendering: pixelated; background: #000; margin-bottom: 4px; }
.cards b { font-size: 1.05em; }
.cards.wide li { display: flex; gap: 10px; align-items: flex-start; }
.cards.wide img { flex: none; margin: 0; }
.issue .change { font-size: 1.05em; }
.wrong { color: var(--bad); }
pre { background: var(--bg); border: 1px solid var(--line); border-radius: 6px; padding: 10px;
  overflow-x: auto; font-size: .85em; line-height: 1.4; white-space: pre-wrap;
  overflow-wrap: anywhere; }
details { margin: 8px 0; }
summary { cursor: pointer; color: var(--accent); }
.reason { overflow-wrap: anywhere; }
footer { color: var(--muted); font-size: .85em; margin: 30px 0 20px; }
@media (max-width: 520px) {
  header .wrap, main { padding: 10px 12px; }
  h1 { font-size: 1.2em; }
  body { font-size: 14px; }
  th, td { padding-right: 6px; }
  table { font-size: .86em; }
  th { white-space: normal; }
}
"""

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy"
  content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>{{ r.title }}</title>
<style>{{ css }}</style>
</head>
<body>
<header><div class="wrap">
<h1>{{ r.title }}</h1>
<dl class="facts">
{% for key, value in r.facts %}<div><dt>{{ key }}</dt><dd>{{ value }}</dd></div>
{% endfor %}</dl>
<ul class="glance" id="glance">
{% if r.claims %}<li>claims: {% for v, n in verdicts %}<span class="{{ v }}">{{ n }} {{ v }}</span>{{ ", " if not loop.last }}{% endfor %}</li>{% endif %}
{% for s in r.splits %}<li>{{ s.name }}: {{ s.n }} examples, error {{ s.error_rate | pct }}, {% if s.issues is none %}label issues not estimated{% else %}{{ s.issues_total }} label issue{{ "s" if s.issues_total != 1 }}{% endif %}</li>
{% endfor %}{% if r.splits %}<li>ranked by <b>{{ r.splits[0].rank_by }}</b></li>{% endif %}
</ul>
<nav>{% if r.claims %}<a href="#claims">Claims</a> {% endif %}{% if r.choice %}<a href="#choice">Score</a> {% endif %}{% for s in r.splits %}<a href="#issues-{{ s.name }}">Label issues ({{ s.name }})</a> <a href="#ends-{{ s.name }}">Hardest ({{ s.name }})</a> <a href="#classes-{{ s.name }}">Classes ({{ s.name }})</a> {% endfor %}{% if r.ood %}<a href="#ood">OoD</a> {% endif %}<a href="#reproduce">Reproduce</a></nav>
</div></header>
<main>
{% for note in r.notes %}<p class="muted">{{ note }}</p>{% endfor %}
{% if r.claims %}
<section id="claims"><h2>Claims</h2>
<p class="muted">The paper's claims tested on this data: the measured value, its
{{ confidence }} interval, and the verdict (supported: the interval excludes the null on the
expected side; contradicted: on the other side; inconclusive: it straddles the null).</p>
<div class="scroll"><table>
<thead><tr><th>claim</th><th>expected</th><th class="num">measured</th><th>interval</th><th>verdict</th></tr></thead>
<tbody>
{% for c in r.claims %}<tr class="claim" data-claim="{{ c.name }}"><td>{{ c.name }}</td><td>{{ c.expected }}</td><td class="num">{{ c.measured | num }}</td><td class="interval">{% if c.lo is not none %}[{{ c.lo | num }}, {{ c.hi | num }}]{% else %}-{% endif %}</td><td class="verdict {{ c.verdict }}">{{ c.verdict }}</td></tr>
{% endfor %}</tbody></table></div>
</section>
{% endif %}
{% if r.choice %}
<section id="choice"><h2>Which score to trust</h2>
<p>The ranking uses <b id="chosen-score">{{ r.choice.score }}</b>{% if r.choice.where %} ({{ r.choice.where }}){% endif %}.</p>
{% if r.choice.numbers %}<div class="scroll"><table class="compact"><tbody>
{% for key, value in r.choice.numbers %}<tr><th>{{ key }}</th><td class="num">{{ value | num }}</td></tr>
{% endfor %}</tbody></table></div>{% endif %}
{% if r.choice.reason %}<details><summary>Why (the scorecard's reasoning)</summary><p class="reason">{{ r.choice.reason }}</p></details>{% endif %}
{% if r.choice.others %}<div class="scroll"><table class="compact"><thead><tr><th>choice among</th><th>score</th></tr></thead><tbody>
{% for key, value in r.choice.others %}<tr><td>{{ key }}</td><td>{{ value }}</td></tr>
{% endfor %}</tbody></table></div>{% endif %}
</section>
{% endif %}
{% for s in r.splits %}
<section id="issues-{{ s.name }}" class="split" data-split="{{ s.name }}"><h2>Label issues: {{ s.name }}</h2>
{% if s.issues is none %}<p class="not-estimated">{{ not_estimated }}</p>
{% elif not s.issues %}<p>No label issue found among the {{ s.n }} {{ s.name }} examples.</p>
{% else %}<p>{{ s.issues_total }} of {{ s.n }} given labels are probably wrong{% if s.issues_total > s.issues | length %} (the {{ s.issues | length }} most doubtful shown; <code>vogflow export</code> writes them all){% endif %}. Each shows the given label and the label the evidence points to, with their probabilities averaged over the checkpoints.</p>
<ul class="cards wide issues">
{% for e in s.issues %}<li class="issue" data-index="{{ e.index }}" data-given="{{ e.given_id }}" data-suggested="{{ e.suggested_id }}">{% if e.image %}<img src="{{ e.image }}" alt="example {{ e.index }}">{% endif %}<div><b>#{{ e.index }}</b>{% if e.where %} <span class="muted">{{ e.where }}</span>{% endif %}<br>
<span class="change">given <b class="wrong">{{ e.given }}</b> <span class="muted">p={{ e.given_prob | prob }}</span><br>&rarr; <b>{{ e.suggested }}</b> <span class="muted">p={{ e.suggested_prob | prob }}</span></span></div></li>
{% endfor %}</ul>{% endif %}
{% if r.issue_quality and s.issues is not none %}<p class="muted quality">{{ r.issue_quality }}</p>{% endif %}
</section>
<section id="ends-{{ s.name }}"><h2>Hardest and easiest: {{ s.name }}</h2>
<p>Ranked by <b>{{ s.rank_by }}</b> ({{ s.rank_where }}); rank 1 = hardest. Each card: index, given label &rarr; final prediction, score.</p>
{% for title, rows, kind in (("Hardest", s.hardest, "hardest"), ("Easiest", s.easiest, "easiest")) %}
<h3>{{ title }} {{ rows | length }}</h3>
<ul class="cards {{ kind }}">
{% for e in rows %}<li class="example" data-index="{{ e.index }}">{% if e.image %}<img src="{{ e.image }}" alt="example {{ e.index }}">{% endif %}<b>#{{ e.index }}</b>{% if e.where %} <span class="muted">{{ e.where }}</span>{% endif %}<br>{{ e.label }} &rarr; <span class="{{ '' if e.correct else 'wrong' }}">{{ e.pred }}</span><br><span class="muted">{{ e.score | num }}</span></li>
{% endfor %}</ul>
{% endfor %}
</section>
<section id="classes-{{ s.name }}"><h2>Per class: {{ s.name }}</h2>
<div class="scroll"><table class="per-class">
<thead><tr><th>class</th><th class="num">size</th><th class="num">error rate</th><th class="num">label issues</th><th class="num">mean {{ s.rank_by }}</th><th class="num">among hardest {{ hardest_share }}</th></tr></thead>
<tbody>
{% for c in s.per_class %}<tr><td>{{ c.label }}</td><td class="num">{{ c.size }}</td><td class="num">{{ c.error_rate | pct }}</td><td class="num">{{ "-" if c.issues is none else c.issues }}</td><td class="num">{{ c.mean_score | num }}</td><td class="num">{{ c.hardest_share | pct }}</td></tr>
{% endfor %}</tbody></table></div>
</section>
{% endfor %}
{% if r.ood %}
<section id="ood"><h2>Out-of-distribution detection</h2>
<p>{{ r.ood.note }}</p>
<div class="scroll"><table><thead><tr>{% for h in r.ood.header %}<th{% if not loop.first %} class="num"{% endif %}>{{ h }}</th>{% endfor %}</tr></thead><tbody>
{% for row in r.ood.rows %}<tr>{% for v in row %}<td{% if not loop.first %} class="num"{% endif %}>{{ v }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table></div>
</section>
{% endif %}
<section id="reproduce"><h2>Reproduce</h2>
<pre><code>{% for c in r.commands %}{{ c }}
{% endfor %}</code></pre>
{% if r.params %}<details><summary>Parameters</summary><pre>{{ r.params }}</pre></details>{% endif %}
</section>
<footer>Written by vogflow. Self-contained: opens offline.</footer>
</main>
</body>
</html>
"""  # noqa: E501 - HTML lines read better whole than wrapped at Python's width


def _num(value: Any) -> str:
    if value is None or isinstance(value, str):
        return "-" if value is None else value
    if isinstance(value, bool):
        return str(value).lower()
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    return f"{value:.3g}"


def _prob(value: Any) -> str:
    return "-" if value is None else f"{float(value):.2f}"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}%"


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["num"] = _num
    env.filters["pct"] = _pct
    env.filters["prob"] = _prob
    return env


def render(report: Report, *, confidence: float = 0.95) -> str:
    """The page of ``report``, as one string."""
    from markupsafe import Markup

    from vogflow.report.content import HARDEST_SHARE, NOT_ESTIMATED

    counts: dict[str, int] = {}
    for claim in report.claims:
        counts[str(claim["verdict"])] = counts.get(str(claim["verdict"]), 0) + 1
    return (
        _environment()
        .from_string(TEMPLATE)
        .render(
            r=report,
            # Our own constant: raw text inside <style>, where entities are not decoded.
            css=Markup(CSS),
            verdicts=sorted(counts.items()),
            confidence=f"{confidence:.0%}",
            not_estimated=NOT_ESTIMATED,
            hardest_share=f"{HARDEST_SHARE:.0%}",
        )
    )


def write(report: Report, path: str | Path, **kwargs: Any) -> Path:
    """Render ``report`` to ``path`` atomically."""
    return write_text(path, render(report, **kwargs))

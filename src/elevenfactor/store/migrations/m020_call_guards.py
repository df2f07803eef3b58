"""m020_call_guards: the guard verdicts of a gateway call.

- ``model_calls.guard``: NULL when no guard policy applied to the call (every row written before
  this migration), else JSON ``{"policies": ["id@version", ...], "verdicts": [...]}``: the
  policies the call was checked with and one verdict record per stage that ran (stage, action,
  policy, rule, findings with positions and never the matched text, the rules that fired, the
  time taken). Covered by the record hash only when set (see
  ``elevenfactor.observe._calls.record_hash``), so old rows still verify.
"""

STATEMENTS = ("ALTER TABLE model_calls ADD COLUMN guard TEXT",)

"""m012_prompts: prompt versions ever used (`prompt_versions`) and the prompt of each model call
(filled in by the work that adds it).
"""

STATEMENTS: tuple[str, ...] = ()

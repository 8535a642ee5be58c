"""Small transformers trained on integer multiplication, and their dissection digit by digit.

Modules, one concept each:

* ``config``: typed run configuration (problem, model, training) and named presets.
* ``model``: builds the native TransformerLens model for a run.
* ``subtasks``: which column subtasks (carry produced, carry used, ...) each answer digit involves.
* ``metrics``: greedy and teacher-forced exact match, per-digit accuracy, per-subtask losses.
* ``checkpoint``: safetensors checkpoints written atomically, and loading a trained run.
* ``training``: the training loop with resume and a JSONL metrics log.
* ``curves``: learning curves and learning order read from that log.
* ``attention``: answer-digit x operand-digit attention maps, and one problem explained digit by digit.
* ``patching``: activation patching per layer and position, and per head.
* ``carries``: accuracy by carries and linear probes for the carry into each column.
* ``compare``: the format comparison at an equal training budget.
"""

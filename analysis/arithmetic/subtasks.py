"""Column subtasks of long multiplication, after Qiu et al. 2024 ("Dissecting
Multiplication in Transformers"), which tracks the loss of each subtask separately.

For product digit ``k`` the column sum is ``base_sum = sum(a_i * b_j for i + j = k)``
and ``carry_in`` comes from column ``k - 1`` (see ``probes.arithmetic.columns``).
The labels below are our operational definitions; one digit can carry several:

* ``base``: no carry in and ``base_sum < 10``, so the digit is the base products alone.
* ``carry_out``: ``base_sum >= 10``, the products themselves produce a carry.
* ``use_carry``: a nonzero carry comes in and must be added.
* ``cascade``: the incoming carry itself pushes the column over a multiple of ten,
  so the carry cascades (``(base_sum + carry_in) // 10 > base_sum // 10``).
* ``carry_on_zero``: a carry comes in on a column whose base products end in 0
  (``base_sum % 10 == 0``), including the top column, which has no products.
"""

from __future__ import annotations

from torch import Tensor

from probes.arithmetic import Columns

SUBTASKS = ("base", "carry_out", "use_carry", "cascade", "carry_on_zero")


def subtask_masks(cols: Columns) -> dict[str, Tensor]:
    """Return each subtask's bool mask [batch, n_places]."""
    has_carry = cols.carry_in > 0
    total = cols.base_sum + cols.carry_in
    return {
        "base": ~has_carry & (cols.base_sum < 10),
        "carry_out": cols.base_sum >= 10,
        "use_carry": has_carry,
        "cascade": has_carry & (total // 10 > cols.base_sum // 10),
        "carry_on_zero": has_carry & (cols.base_sum % 10 == 0),
    }


def cascade_length(cols: Columns) -> Tensor:
    """Return each problem's longest run of consecutive ``cascade`` columns [batch]."""
    cascade = subtask_masks(cols)["cascade"].long()
    longest = cascade.new_zeros(cascade.shape[0])
    current = cascade.new_zeros(cascade.shape[0])
    for k in range(cascade.shape[1]):
        current = (current + 1) * cascade[:, k]
        longest = longest.maximum(current)
    return longest

"""The MetaWorld tasks octo_like knows: all 50 of MT50, each with its scripted expert and
several instructions.

Several phrasings per task, so a language-conditioned policy learns the task rather than one
string. `EXPERT_SUCCESS` is the scripted expert's measured success (docs/simulation.md):
tasks whose expert falls below 90% make noisy demonstrations and are flagged there. Pure Python:
safe to import in simulator worker processes.
"""

from __future__ import annotations

import dataclasses
import difflib

# Five tasks whose scripted experts solve 20/20 episodes (measured); the default task set.
DEFAULT_TASKS = ("reach", "push", "pick-place", "button-press-topdown", "drawer-open")

# Expert classes whose names do not follow "Sawyer" + CamelCase(task) + "V3Policy".
_EXPERT_EXCEPTIONS = {"peg-insert-side": "SawyerPegInsertionSideV3Policy"}


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """One MetaWorld task: `env_name` in metaworld's registry, the expert's class name in
    `metaworld.policies`, and natural-language instructions (the first is the canonical one)."""

    name: str
    env_name: str
    expert: str
    instructions: tuple[str, ...]


def expert_class_name(task: str) -> str:
    """``"button-press-topdown"`` -> ``"SawyerButtonPressTopdownV3Policy"``."""
    if task in _EXPERT_EXCEPTIONS:
        return _EXPERT_EXCEPTIONS[task]
    return "Sawyer" + "".join(part.capitalize() for part in task.split("-")) + "V3Policy"


# task name -> instructions, the canonical phrasing first. MT50, alphabetical.
_INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "assembly": (
        "put the ring on the peg",
        "assemble the ring onto the peg",
        "place the nut over the peg",
    ),
    "basketball": ("put the ball in the hoop", "dunk the basketball into the basket"),
    "bin-picking": (
        "move the cube from one bin to the other",
        "pick the block out of the bin and put it in the other bin",
    ),
    "box-close": ("close the box with its lid", "put the lid on the box"),
    "button-press": ("press the button from the front", "push the button on the wall"),
    "button-press-topdown": (
        "press the button from the top",
        "push the button down",
        "press down on the red button",
    ),
    "button-press-topdown-wall": (
        "press the button from the top behind the wall",
        "reach over the wall and push the button down",
    ),
    "button-press-wall": (
        "press the button from the front behind the wall",
        "reach past the wall and press the button",
    ),
    "coffee-button": ("press the coffee machine button", "push the button on the coffee machine"),
    "coffee-pull": (
        "pull the mug out from under the coffee machine",
        "slide the cup away from the coffee machine",
    ),
    "coffee-push": (
        "push the mug under the coffee machine",
        "slide the cup under the coffee spout",
    ),
    "dial-turn": ("turn the dial", "rotate the dial a quarter turn"),
    "disassemble": ("take the ring off the peg", "lift the nut off the peg"),
    "door-close": ("close the door", "push the door shut"),
    "door-lock": ("lock the door", "turn the door lock down"),
    "door-open": ("open the door", "pull the door open by its handle"),
    "door-unlock": ("unlock the door", "turn the door lock up"),
    "drawer-close": ("close the drawer", "push the drawer shut"),
    "drawer-open": ("open the drawer", "pull the drawer open", "pull out the drawer"),
    "faucet-close": ("turn the faucet off", "rotate the faucet handle to close it"),
    "faucet-open": ("turn the faucet on", "rotate the faucet handle to open it"),
    "hammer": ("hammer the nail into the wall", "use the hammer to drive in the nail"),
    "hand-insert": ("put the block into the hole", "insert the block into the hole in the table"),
    "handle-press": ("press the handle down", "push down on the handle"),
    "handle-press-side": ("press the handle down from the side", "push the side handle down"),
    "handle-pull": ("pull the handle up", "lift the handle"),
    "handle-pull-side": ("pull the handle up from the side", "lift the side handle"),
    "lever-pull": ("pull the lever up", "raise the lever"),
    "peg-insert-side": (
        "insert the peg into the hole from the side",
        "push the peg sideways into the hole",
    ),
    "peg-unplug-side": ("unplug the peg from the side", "pull the peg out of the hole"),
    "pick-out-of-hole": (
        "pick the puck out of the hole",
        "lift the puck out of the hole to the goal",
    ),
    "pick-place": (
        "pick up the puck and place it at the goal",
        "grasp the puck and move it to the target",
        "put the puck on the goal",
    ),
    "pick-place-wall": (
        "pick up the puck and place it at the goal behind the wall",
        "lift the puck over the wall to the target",
    ),
    "plate-slide": ("slide the plate into the goal", "push the plate into the net"),
    "plate-slide-back": ("slide the plate back out of the net", "pull the plate out of the goal"),
    "plate-slide-back-side": (
        "slide the plate back out of the net from the side",
        "pull the plate sideways out of the goal",
    ),
    "plate-slide-side": (
        "slide the plate sideways into the net",
        "push the plate into the goal from the side",
    ),
    "push": (
        "push the puck to the goal",
        "slide the puck to the target",
        "push the red puck to the green point",
    ),
    "push-back": ("push the puck back to the goal", "pull the puck backwards to the target"),
    "push-wall": (
        "push the puck around the wall to the goal",
        "slide the puck past the wall to the target",
    ),
    "reach": (
        "reach to the goal",
        "move the gripper to the target position",
        "reach for the red point",
    ),
    "reach-wall": (
        "reach to the goal behind the wall",
        "move the gripper over the wall to the target",
    ),
    "shelf-place": ("put the block on the shelf", "place the cube on the shelf"),
    "soccer": ("kick the ball into the goal", "push the soccer ball into the net"),
    "stick-pull": (
        "use the stick to pull the box",
        "grab the stick and pull the container with it",
    ),
    "stick-push": (
        "use the stick to push the box",
        "grab the stick and push the container with it",
    ),
    "sweep": ("sweep the block off the table", "push the cube off the edge of the table"),
    "sweep-into": ("sweep the block into the hole", "push the cube into the hole in the table"),
    "window-close": ("close the window", "slide the window shut"),
    "window-open": ("open the window", "slide the window open"),
}

TASKS: dict[str, TaskInfo] = {
    name: TaskInfo(name, f"{name}-v3-goal-observable", expert_class_name(name), instructions)
    for name, instructions in _INSTRUCTIONS.items()
}


def get_task(name: str) -> TaskInfo:
    """The task called `name`; an unknown name fails listing the close ones."""
    if name not in TASKS:
        close = difflib.get_close_matches(name, TASKS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown MetaWorld task {name!r}{hint} (known: {', '.join(TASKS)})")
    return TASKS[name]


# MT50 grouped by the object a task acts on: holding out a family keeps every task on that object
# out of pretraining, so a held-out test task is new in kind, not a sibling of a pretraining one.
FAMILIES: dict[str, tuple[str, ...]] = {
    "assembly": ("assembly", "disassemble"),
    "basketball": ("basketball",),
    "bin": ("bin-picking",),
    "box": ("box-close",),
    "button": (
        "button-press",
        "button-press-topdown",
        "button-press-topdown-wall",
        "button-press-wall",
    ),
    "coffee": ("coffee-button", "coffee-pull", "coffee-push"),
    "dial": ("dial-turn",),
    "door": ("door-close", "door-lock", "door-open", "door-unlock"),
    "drawer": ("drawer-close", "drawer-open"),
    "faucet": ("faucet-close", "faucet-open"),
    "hammer": ("hammer",),
    "hand-insert": ("hand-insert",),
    "handle": ("handle-press", "handle-press-side", "handle-pull", "handle-pull-side"),
    "lever": ("lever-pull",),
    "peg": ("peg-insert-side", "peg-unplug-side"),
    "pick": ("pick-out-of-hole", "pick-place", "pick-place-wall"),
    "plate": ("plate-slide", "plate-slide-back", "plate-slide-back-side", "plate-slide-side"),
    "push": ("push", "push-back", "push-wall"),
    "reach": ("reach", "reach-wall"),
    "shelf": ("shelf-place",),
    "soccer": ("soccer",),
    "stick": ("stick-pull", "stick-push"),
    "sweep": ("sweep", "sweep-into"),
    "window": ("window-close", "window-open"),
}
FAMILY_PREFIX = "family:"


def family_of(task: str) -> str:
    """The family (a key of `FAMILIES`) `task` belongs to."""
    get_task(task)
    return next(name for name, members in FAMILIES.items() if task in members)


def expand_tasks(text: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Task names, ``family:NAME`` for a family's tasks, or ``all`` for MT50 -> task names in
    order, no duplicates (a task named twice, or in two named families, is listed once)."""
    names = [t.strip() for t in text.split(",")] if isinstance(text, str) else list(text)
    tasks: list[str] = []
    for name in (n for n in names if n):
        if name == "all":
            members = tuple(TASKS)
        elif name.startswith(FAMILY_PREFIX):
            family = name[len(FAMILY_PREFIX) :]
            if family not in FAMILIES:
                close = difflib.get_close_matches(family, FAMILIES, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise ValueError(
                    f"unknown task family {family!r}{hint} (known: {', '.join(FAMILIES)})"
                )
            members = FAMILIES[family]
        else:
            members = (get_task(name).name,)
        tasks.extend(t for t in members if t not in tasks)
    if not tasks:
        raise ValueError("no tasks given")
    return tuple(tasks)


def pretraining_tasks(tasks: str, held_out: str = "") -> tuple[str, ...]:
    """`tasks` (as `expand_tasks` reads them) minus everything in `held_out` (same syntax):
    what pretraining may collect demonstrations of. Every held-out name must be known, and
    something must be left."""
    chosen = expand_tasks(tasks)
    excluded = set(expand_tasks(held_out)) if held_out.strip() else set()
    kept = tuple(t for t in chosen if t not in excluded)
    if not kept:
        raise ValueError(f"holding out {held_out!r} leaves no pretraining task of {tasks!r}")
    return kept


def parse_tasks(text: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"reach,push"`` (or a sequence) -> validated task names, in order, no duplicates."""
    names = [t.strip() for t in text.split(",")] if isinstance(text, str) else list(text)
    names = [n for n in names if n]
    if not names:
        raise ValueError("no tasks given")
    if len(set(names)) != len(names):
        raise ValueError(f"a task is listed twice: {names}")
    for name in names:
        get_task(name)
    return tuple(names)

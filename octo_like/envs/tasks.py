"""The MetaWorld tasks octo_like knows: environment name, scripted expert and instructions.

Several phrasings per task, so a language-conditioned policy learns the task rather than one
string. Pure Python: safe to import in simulator worker processes.
"""

from __future__ import annotations

import dataclasses
import difflib

# The five tasks whose scripted experts solve 20/20 episodes (measured); the default task set.
DEFAULT_TASKS = ("reach", "push", "pick-place", "button-press-topdown", "drawer-open")


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """One MetaWorld task: `env_name` in metaworld's registry, the expert's class name in
    `metaworld.policies`, and natural-language instructions (the first is the canonical one)."""

    name: str
    env_name: str
    expert: str
    instructions: tuple[str, ...]


def _task(name: str, expert: str, *instructions: str) -> TaskInfo:
    return TaskInfo(name, f"{name}-v3-goal-observable", expert, instructions)


TASKS: dict[str, TaskInfo] = {
    t.name: t
    for t in (
        _task(
            "reach",
            "SawyerReachV3Policy",
            "reach to the goal",
            "move the gripper to the target position",
            "reach for the red point",
        ),
        _task(
            "push",
            "SawyerPushV3Policy",
            "push the puck to the goal",
            "slide the puck to the target",
            "push the red puck to the green point",
        ),
        _task(
            "pick-place",
            "SawyerPickPlaceV3Policy",
            "pick up the puck and place it at the goal",
            "grasp the puck and move it to the target",
            "put the puck on the goal",
        ),
        _task(
            "button-press-topdown",
            "SawyerButtonPressTopdownV3Policy",
            "press the button from the top",
            "push the button down",
            "press down on the red button",
        ),
        _task(
            "drawer-open",
            "SawyerDrawerOpenV3Policy",
            "open the drawer",
            "pull the drawer open",
            "pull out the drawer",
        ),
        _task(
            "drawer-close",
            "SawyerDrawerCloseV3Policy",
            "close the drawer",
            "push the drawer shut",
        ),
        _task(
            "door-open",
            "SawyerDoorOpenV3Policy",
            "open the door",
            "pull the door open by its handle",
        ),
        _task(
            "window-open",
            "SawyerWindowOpenV3Policy",
            "open the window",
            "slide the window open",
        ),
        _task(
            "button-press",
            "SawyerButtonPressV3Policy",
            "press the button from the front",
            "push the button on the wall",
        ),
        _task(
            "plate-slide",
            "SawyerPlateSlideV3Policy",
            "slide the plate into the goal",
            "push the plate into the net",
        ),
        _task(
            "faucet-open",
            "SawyerFaucetOpenV3Policy",
            "turn the faucet on",
            "rotate the faucet handle to open it",
        ),
        _task(
            "coffee-button",
            "SawyerCoffeeButtonV3Policy",
            "press the coffee machine button",
            "push the button on the coffee machine",
        ),
    )
}


def get_task(name: str) -> TaskInfo:
    """The task called `name`; an unknown name fails listing the close ones."""
    if name not in TASKS:
        close = difflib.get_close_matches(name, TASKS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown MetaWorld task {name!r}{hint} (known: {', '.join(TASKS)})")
    return TASKS[name]


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

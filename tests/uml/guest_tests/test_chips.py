"""
The real libgpiod v2 (the gpiod wheel) against the kernel's gpio-sim: the header chip is
found by its label, its lines by name; inputs follow the simulated pull, outputs show in
sysfs. And the guest itself: it runs this checkout, and cannot write to the host.
"""

import os
from pathlib import Path

import gpiod
import pytest
from gpiod.line import Direction, Value


def chips_by_label() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for entry in sorted(Path("/dev").glob("gpiochip*")):
        if gpiod.is_gpiochip_device(str(entry)):
            with gpiod.Chip(str(entry)) as chip:
                found.setdefault(chip.get_info().label, []).append(str(entry))
    return found


def test_the_header_chip_is_found_by_its_label_not_its_number(header, sim_chips):
    found = chips_by_label()
    assert found[header.label] == [header.path] == [os.environ["RPISENSOR_UML_CHIP"]]
    assert found[sim_chips["other"].label] == ["/dev/gpiochip0"]
    assert header.path != "/dev/gpiochip0"
    with gpiod.Chip(header.path) as chip:
        assert chip.get_info().num_lines == len(header.line_names) > 0


def test_lines_are_found_by_name(header):
    assert header.line_names == tuple(os.environ["RPISENSOR_UML_LINE_NAMES"].split())
    with gpiod.Chip(header.path) as chip:
        assert chip.line_offset_from_id("GPIO17") == 17 == header.offset("GPIO17")
        assert chip.get_line_info(27).name == "GPIO27"
        with pytest.raises(OSError):
            chip.line_offset_from_id("GPIO99")


def test_an_input_follows_the_simulated_pull(header):
    with gpiod.request_lines(header.path, consumer="guest-test",
                             config={17: gpiod.LineSettings(direction=Direction.INPUT)}) as request:
        header.pull(17, True)
        assert request.get_value(17) == Value.ACTIVE
        header.pull(17, False)
        assert request.get_value(17) == Value.INACTIVE


def test_an_output_shows_in_the_sim_directory(header):
    with gpiod.request_lines(header.path, consumer="guest-test", config={
        18: gpiod.LineSettings(direction=Direction.OUTPUT, output_value=Value.ACTIVE)
    }) as request:
        assert header.level(18) == 1
        request.set_value(18, Value.INACTIVE)
        assert header.level(18) == 0
        with gpiod.Chip(header.path) as chip:
            assert chip.get_line_info(18).consumer == "guest-test"


def test_the_guest_runs_this_checkout():
    import rpisensor

    checkout = Path(os.environ["RPISENSOR_UML_CHECKOUT"])
    assert Path(rpisensor.__file__).resolve().is_relative_to(checkout)
    assert Path(__file__).resolve().is_relative_to(checkout)


def test_the_host_is_read_only_from_the_guest():
    with pytest.raises(OSError) as raised:
        (Path(os.environ["RPISENSOR_UML_CHECKOUT"]) / "written-by-the-guest").write_text("no")
    assert raised.value.errno == 30  # EROFS

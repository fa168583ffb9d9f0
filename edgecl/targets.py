"""Device targets of an export: onnx (fp32 and int8 ONNX, always built) and tflm (adds the
TensorFlow Lite Micro build). The run config's vocabulary, read by firmware_export."""

TARGETS = ("onnx", "tflm")


# Named target parts for --part: (arena limit, flatbuffer limit) in bytes, the defaults of
# --arena-limit and --flash-limit. A part's whole on-chip SRAM and flash: what the application
# needs besides the model (stack, the front end's buffers, its own code) comes out of them, so
# give --arena-limit / --flash-limit to keep a margin.
KIB, MIB = 1024, 1024 * 1024
PARTS = {
    "nrf52840": (256 * KIB, 1 * MIB),  # Arduino Nano 33 BLE Sense: 256 KB RAM, 1 MB flash
    "stm32f746": (320 * KIB, 1 * MIB),  # Cortex-M7: 320 KB RAM, 1 MB flash
    "stm32h743": (1 * MIB, 2 * MIB),  # Cortex-M7: 1 MB RAM, 2 MB flash
}
PART_NAMES = tuple(PARTS)


def part_limits(part: str | None, arena: int | None, flash: int | None
                ) -> tuple[int | None, int | None]:
    """(arena, flash) limits: the given ones, each defaulting to `part`'s (none without one)."""
    if part is None:
        return arena, flash
    part_arena, part_flash = PARTS[part]
    return (part_arena if arena is None else arena, part_flash if flash is None else flash)


def part_help() -> str:
    """--part's help text, with each part's figures from PARTS."""
    def iec(size: int) -> str:
        return f"{size // MIB} MiB" if size % MIB == 0 else f"{size // KIB} KiB"

    parts = ", ".join(f"{name} {iec(arena)} arena / {iec(flash)} flash"
                      for name, (arena, flash) in PARTS.items())
    return (f"Target part whose RAM and flash set the defaults of --arena-limit and "
            f"--flash-limit (a limit given too overrides its own): {parts}. The whole part: "
            f"keep a margin for the application with explicit limits (--target tflm).")

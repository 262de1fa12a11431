"""Layers 0 and 1: parsing (pure), the loop's clock and wake-up, delays, periodic ticks,
timers and host matching."""

"""Cycle-exact runs on the OpenHW CV32E40P RTL under Verilator (simulator.py), with the harness,
startup code and MMIO contract (rtl_io.h) that programs built for it use."""

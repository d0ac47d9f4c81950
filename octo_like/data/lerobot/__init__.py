"""Reading LeRobot dataset directories (v2.x, v3.0) into RLDS: the layout, the frames, the
converter (`convert.convert_lerobot`; command line: data/convert_lerobot.py)."""

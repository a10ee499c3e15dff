"""A live class: rooms that a teacher drives and students follow, answer in, and pool their runs in.

Plain Python (no Gradio), thread-safe: ``store`` (``RoomStore``, the interface; ``MemoryRooms``, the in-process
rooms; codes, keys and the join rate limit), ``room`` (one class's state and its three views), ``pool`` (class
experiments as data: a grid spread over the students, one lesson-sized run per cell, the class plot's data).
"""
from .errors import NotTeacher, RoomError, RoomFull, RoomNotFound, RoomsFull, TooManyAttempts
from .pool import (BY_STEP, EXPERIMENTS, Assignment, ClassExperiment, assign, experiment_for, figure_data, missing,
                   numbers, run_assignment, run_to_result)
from .room import MAX_STUDENTS, Position, Room, Student, clean_name
from .store import (ALPHABET, CODE_LENGTH, ROOMS, AttemptLimiter, MemoryRooms, RoomStore, guess_odds, new_code,
                    normal_code)

"""Feedback: records (fragments, comparisons, rankings) and the teachers that produce them."""

from rlhfkit.feedback.records import Comparison, Fragment, Outcome, Ranking
from rlhfkit.feedback.teachers import TEACHERS, SyntheticTeacher, Teacher, make_teacher

__all__ = ["TEACHERS", "Comparison", "Fragment", "Outcome", "Ranking", "SyntheticTeacher", "Teacher", "make_teacher"]

// SPDX-License-Identifier: GPL-3.0-or-later
//! The PEC message model: pure, no I/O (style rule 2).

pub mod breve;
pub mod build;
pub mod classify;
pub mod codes;
pub mod daticert;
pub mod ids;
pub mod kind;
pub mod mime;
pub mod sevenbit;
pub mod time;

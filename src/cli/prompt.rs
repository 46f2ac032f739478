//! The approval prompt: nothing is written unless a person types `yes`.

use std::io::IsTerminal;

use crate::engine::Approval;

/// Asks on the terminal; without one, nobody can approve.
pub fn approve() -> Approval {
    if !std::io::stdin().is_terminal() {
        return Approval::NoTerminal;
    }
    out!("\nApply these changes? Only 'yes' will be accepted: ");
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    if answer.trim() == "yes" {
        Approval::Approved
    } else {
        Approval::Declined
    }
}

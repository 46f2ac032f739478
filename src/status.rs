//! The one exit-status type: every command's outcome comes down to one of
//! these, and only the binary turns it into a process exit code.

/// How a run ended, as the shell sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Done (0).
    Success,
    /// `plan --detailed-exitcode`: nothing to change (0).
    NoChanges,
    /// `plan --detailed-exitcode`: changes to apply (2).
    Changes,
    /// An error, including a usage error (1).
    Failure,
    /// The plan is stale, or someone else wrote meanwhile (3).
    Stale,
}

impl ExitStatus {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            ExitStatus::Success | ExitStatus::NoChanges => 0,
            ExitStatus::Failure => 1,
            ExitStatus::Changes => 2,
            ExitStatus::Stale => 3,
        }
    }
}

impl From<ExitStatus> for std::process::ExitCode {
    fn from(status: ExitStatus) -> Self {
        std::process::ExitCode::from(status.code())
    }
}

#[cfg(test)]
mod tests {
    use super::ExitStatus;

    #[test]
    fn codes_keep_2_for_changes_and_3_for_stale() {
        let table = [
            (ExitStatus::Success, 0),
            (ExitStatus::NoChanges, 0),
            (ExitStatus::Failure, 1),
            (ExitStatus::Changes, 2),
            (ExitStatus::Stale, 3),
        ];
        for (status, code) in table {
            assert_eq!(status.code(), code, "{status:?}");
        }
    }
}

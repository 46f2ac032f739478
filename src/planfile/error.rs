//! Diagnostics of the plan-file layer: every problem points at the offending
//! value in the file and says how to fix it.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceSpan};

/// One thing wrong in a plan file.
#[derive(Debug, Clone)]
pub struct Problem {
    pub code: &'static str,
    pub message: String,
    pub labels: Vec<(SourceSpan, String)>,
    pub help: String,
}

impl Problem {
    pub fn new(code: &'static str, message: impl Into<String>, help: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            labels: Vec::new(),
            help: help.into(),
        }
    }

    pub fn label(mut self, span: Option<SourceSpan>, text: impl Into<String>) -> Self {
        if let Some(span) = span {
            self.labels.push((span, text.into()));
        }
        self
    }

    /// Where the first label points, as a byte offset into the file.
    pub fn offset(&self) -> Option<usize> {
        self.labels.first().map(|(span, _)| span.offset())
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Problem {}

impl Diagnostic for Problem {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.code))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(&self.help))
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.labels.is_empty() {
            return None;
        }
        Some(Box::new(self.labels.iter().map(|(span, text)| {
            LabeledSpan::new_with_span(Some(text.clone()), *span)
        })))
    }
}

/// Why a plan file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PlanFileError {
    #[error("cannot read plan file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// One problem is shown as itself; several as a list under a summary.
    #[error("{}", summary(name, problems))]
    Invalid {
        name: String,
        src: NamedSource<Arc<str>>,
        problems: Vec<Problem>,
    },
}

impl PlanFileError {
    /// The problems found, empty for a file that could not be read.
    pub fn problems(&self) -> &[Problem] {
        match self {
            PlanFileError::Read { .. } => &[],
            PlanFileError::Invalid { problems, .. } => problems,
        }
    }

    fn single(&self) -> Option<&Problem> {
        match self.problems() {
            [one] => Some(one),
            _ => None,
        }
    }
}

fn summary(name: &str, problems: &[Problem]) -> String {
    match problems {
        [one] => format!("{name}: {}", one.message),
        many => format!("{name} is not a valid plan file: {} problems", many.len()),
    }
}

impl Diagnostic for PlanFileError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(match (self, self.single()) {
            (PlanFileError::Read { .. }, _) => Box::new("etcdplan::plan_file::read"),
            (_, Some(one)) => Box::new(one.code),
            _ => Box::new("etcdplan::plan_file::invalid"),
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(match (self, self.single()) {
            (PlanFileError::Read { .. }, _) => {
                Box::new("check the path; a relative path starts at the current directory")
            }
            (_, Some(one)) => Box::new(&one.help),
            _ => Box::new("fix each problem below; `etcdplan validate` checks the file offline"),
        })
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        match self {
            PlanFileError::Invalid { src, .. } => Some(src),
            PlanFileError::Read { .. } => None,
        }
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.single()?.labels()
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        match self.problems() {
            [] | [_] => None,
            many => Some(Box::new(many.iter().map(|p| p as &dyn Diagnostic))),
        }
    }
}

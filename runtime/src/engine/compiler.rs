//! Compiling a component to native code, in this process or in a child,
//! with Cranelift or Winch (the two [`Tier`]s).
//!
//! A compiler's working memory for a large component (a 13 MB JS component
//! takes hundreds of MiB in Cranelift) stays in the allocator's arenas after
//! it is freed, so a server that compiled one would sit far above its idle
//! size. A large component is compiled by a child process (`kiln` itself)
//! whose memory goes back to the OS when it exits; the server only loads the
//! artifact. Small components compile in process: the child's start would
//! cost more than their compile.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::{EngineError, engine_config};

/// Components at least this large compile in a child process.
const CHILD_FROM_BYTES: usize = 1024 * 1024;

/// The hidden subcommand of the server's executable that compiles for it.
pub const CHILD_COMMAND: &str = "compile-component";

/// Where compiles run.
#[derive(Debug, Clone)]
pub enum Compiler {
    InProcess,
    /// Large components in a child: this executable with [`CHILD_COMMAND`]
    /// and the engine's settings as arguments (see [`run_child`]).
    Child(PathBuf),
}

/// Which compiler makes the native code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Cranelift: optimized code, and the compile cache's.
    Optimized,
    /// Winch, a baseline compiler: a 13 MB JS component in about a fifth of
    /// Cranelift's time, for slower code; served until Cranelift's is ready.
    Quick,
}

impl Tier {
    /// The name a child is given on its command line.
    pub fn as_arg(self) -> &'static str {
        match self {
            Tier::Optimized => "optimized",
            Tier::Quick => "quick",
        }
    }

    pub fn from_arg(arg: &str) -> Option<Tier> {
        [Tier::Optimized, Tier::Quick]
            .into_iter()
            .find(|t| t.as_arg() == arg)
    }
}

/// What a child needs to configure an engine identical to the server's.
#[derive(Debug, Clone, Copy)]
pub struct CompileSettings {
    pub max_instances: u32,
    pub max_memory_bytes: usize,
    pub tier: Tier,
}

impl CompileSettings {
    fn args(&self) -> [String; 6] {
        [
            "--max-instances".into(),
            self.max_instances.to_string(),
            "--max-memory-bytes".into(),
            self.max_memory_bytes.to_string(),
            "--tier".into(),
            self.tier.as_arg().into(),
        ]
    }
}

impl Compiler {
    /// The serialized artifact of `bytes`, as `Engine::precompile_component`
    /// writes it. Blocking.
    pub fn precompile(
        &self,
        engine: &wasmtime::Engine,
        settings: CompileSettings,
        bytes: &[u8],
    ) -> Result<Vec<u8>, EngineError> {
        match self {
            Compiler::Child(exe) if bytes.len() >= CHILD_FROM_BYTES => {
                compile_in_child(exe, settings, bytes)
            }
            _ => engine
                .precompile_component(bytes)
                .map_err(EngineError::InvalidComponent),
        }
    }
}

fn compile_in_child(
    exe: &PathBuf,
    settings: CompileSettings,
    bytes: &[u8],
) -> Result<Vec<u8>, EngineError> {
    let failed = |what: &str, err: std::io::Error| {
        EngineError::Compiler(format!("{what} {}: {err}", exe.display()))
    };
    // The child parses a tenant's bytes: it gets none of the server's
    // environment (admin key, database URI).
    let mut command = Command::new(exe);
    command
        .arg(CHILD_COMMAND)
        .args(settings.args())
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The child dies with the server (a compile can outlive a shutdown).
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and touches only the child.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| failed("cannot start", e))?;
    // The child reads all of stdin before it writes, so writing first cannot deadlock.
    let mut stdin = child.stdin.take().expect("piped");
    let written = stdin.write_all(bytes);
    drop(stdin);
    let output = child
        .wait_with_output()
        .map_err(|e| failed("cannot wait for", e))?;
    if !output.status.success() {
        let reason = String::from_utf8_lossy(&output.stderr).trim().to_string();
        return Err(match reason.strip_prefix(INVALID_PREFIX) {
            Some(reason) => EngineError::InvalidComponent(wasmtime::format_err!("{reason}")),
            None => EngineError::Compiler(format!(
                "the compiler process failed ({}): {reason}",
                output.status
            )),
        });
    }
    written.map_err(|e| failed("cannot write to", e))?;
    Ok(output.stdout)
}

/// How the child marks a component that does not compile (the guest's
/// fault), as opposed to the child failing.
const INVALID_PREFIX: &str = "invalid component: ";

/// The child's side: reads a component on stdin, writes the serialized
/// artifact on stdout; a component that does not compile exits 1 with the
/// reason on stderr. Returns whether it succeeded.
pub fn run_child(settings: CompileSettings) -> bool {
    let mut bytes = Vec::new();
    if let Err(err) = std::io::stdin().read_to_end(&mut bytes) {
        eprintln!("cannot read the component: {err}");
        return false;
    }
    let engine = match wasmtime::Engine::new(&engine_config(settings)) {
        Ok(engine) => engine,
        Err(err) => {
            eprintln!("engine configuration: {err:#}");
            return false;
        }
    };
    match engine.precompile_component(&bytes) {
        Ok(artifact) => match std::io::stdout().lock().write_all(&artifact) {
            Ok(()) => true,
            Err(err) => {
                eprintln!("cannot write the artifact: {err}");
                false
            }
        },
        Err(err) => {
            eprintln!("{INVALID_PREFIX}{err:#}");
            false
        }
    }
}

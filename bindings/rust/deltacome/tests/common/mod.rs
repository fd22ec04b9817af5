//! Test fixtures: a demo base/fine-tuned pair made and compressed by the deltacome CLI, and a
//! minimal safetensors reader (the dense reference: ΔW = fine-tuned − base, in float64).
#![allow(dead_code)]
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub struct Fixture {
    pub dir: PathBuf,
    pub dcz: PathBuf,
    pub base: PathBuf,
    pub finetuned: PathBuf,
}

/// The fixture directory: $DELTACOME_FIXTURES when the caller made one (tests/packaging/run.sh
/// makes it once for every binding), else made here with the CLI ($DELTACOME_CLI, else
/// $DELTACOME_DIR/bin/deltacome, else `deltacome` on PATH).
pub fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = match std::env::var_os("DELTACOME_FIXTURES") {
            Some(d) => PathBuf::from(d),
            None => {
                let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fixtures");
                make_fixtures(&d);
                d
            }
        };
        let f = Fixture {
            dcz: dir.join("model.dcz"),
            base: dir.join("base.safetensors"),
            finetuned: dir.join("finetuned.safetensors"),
            dir,
        };
        for p in [&f.dcz, &f.base, &f.finetuned] {
            assert!(p.exists(), "fixture {} is missing", p.display());
        }
        f
    })
}

/// The same pair compressed with `--scheme bitdelta`: a second variant of the same base (for the
/// pool tests). bitdelta.dcz of the fixture directory, or made here when that directory predates it.
pub fn bitdelta() -> &'static Path {
    static B: OnceLock<PathBuf> = OnceLock::new();
    B.get_or_init(|| {
        let f = fixture();
        let p = f.dir.join("bitdelta.dcz");
        if p.exists() {
            return p;
        }
        let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bitdelta.dcz");
        compress_bitdelta(&f.dir, &p);
        p
    })
}

pub fn cli() -> PathBuf {
    if let Some(c) = std::env::var_os("DELTACOME_CLI") {
        return PathBuf::from(c);
    }
    if let Some(d) = std::env::var_os("DELTACOME_DIR") {
        return Path::new(&d).join("bin").join("deltacome");
    }
    PathBuf::from("deltacome")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed:\n{}{}", String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr));
}

fn make_fixtures(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let cli = cli();
    run(Command::new(&cli).args(["make-demo", "--out"]).arg(dir)
        .args(["--layers", "2", "--hidden", "128", "--seed", "7"]));
    run(Command::new(&cli).arg("compress")
        .arg("--base").arg(dir.join("base.safetensors"))
        .arg("--finetuned").arg(dir.join("finetuned.safetensors"))
        .arg("-o").arg(dir.join("model.dcz")));
    compress_bitdelta(dir, &dir.join("bitdelta.dcz"));
}

fn compress_bitdelta(dir: &Path, out: &Path) {
    run(Command::new(cli()).args(["compress", "--quiet", "--scheme", "bitdelta"])
        .arg("--base").arg(dir.join("base.safetensors"))
        .arg("--finetuned").arg(dir.join("finetuned.safetensors"))
        .arg("-o").arg(out));
}

/// A scratch directory for this test binary.
pub fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("scratch-{}", std::process::id())).join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

// ---- safetensors ----------------------------------------------------------------------------------

pub struct StTensor {
    pub dtype: String,
    pub shape: Vec<u64>,
    pub bytes: Vec<u8>,
}

impl StTensor {
    /// Elements as float64 (F32, F16, BF16).
    pub fn to_f64(&self) -> Vec<f64> {
        match self.dtype.as_str() {
            "F32" => self.bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64).collect(),
            "F16" => self.bytes.chunks_exact(2)
                .map(|c| deltacome::F16(u16::from_le_bytes([c[0], c[1]])).to_f32() as f64).collect(),
            "BF16" => self.bytes.chunks_exact(2)
                .map(|c| deltacome::Bf16(u16::from_le_bytes([c[0], c[1]])).to_f32() as f64).collect(),
            other => panic!("dtype {other} not handled by the test reader"),
        }
    }
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
}

pub fn read_safetensors(path: &Path) -> BTreeMap<String, StTensor> {
    let file = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&file[8..8 + n]).unwrap();
    let data = &file[8 + n..];
    let json = Json::parse(header);
    let mut out = BTreeMap::new();
    let Json::Object(entries) = json else { panic!("safetensors header is not an object") };
    for (name, v) in entries {
        if name == "__metadata__" {
            continue;
        }
        let dtype = v.get("dtype").as_str().to_string();
        let shape: Vec<u64> = v.get("shape").as_array().iter().map(|x| x.as_f64() as u64).collect();
        let off = v.get("data_offsets").as_array();
        let (b, e) = (off[0].as_f64() as usize, off[1].as_f64() as usize);
        out.insert(name, StTensor { dtype, shape, bytes: data[b..e].to_vec() });
    }
    out
}

/// Just enough JSON for a safetensors header.
#[derive(Debug, Clone)]
pub enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    pub fn parse(s: &str) -> Json {
        let mut p = Parser { b: s.as_bytes(), i: 0 };
        let v = p.value();
        p.ws();
        assert_eq!(p.i, p.b.len(), "trailing bytes after JSON");
        v
    }
    pub fn get(&self, key: &str) -> &Json {
        match self {
            Json::Object(e) => &e.iter().find(|(k, _)| k == key).unwrap_or_else(|| panic!("no key {key}")).1,
            _ => panic!("not an object"),
        }
    }
    pub fn as_str(&self) -> &str {
        match self { Json::Str(s) => s, _ => panic!("not a string") }
    }
    pub fn as_f64(&self) -> f64 {
        match self { Json::Num(n) => *n, _ => panic!("not a number") }
    }
    pub fn as_array(&self) -> &[Json] {
        match self { Json::Array(a) => a, _ => panic!("not an array") }
    }
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.b.len() && (self.b[self.i] as char).is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) {
        self.ws();
        assert_eq!(self.b[self.i], c, "JSON: expected {:?} at {}", c as char, self.i);
        self.i += 1;
    }
    fn value(&mut self) -> Json {
        self.ws();
        match self.b[self.i] {
            b'{' => {
                self.i += 1;
                let mut e = Vec::new();
                self.ws();
                if self.b[self.i] == b'}' {
                    self.i += 1;
                    return Json::Object(e);
                }
                loop {
                    self.ws();
                    let k = self.string();
                    self.eat(b':');
                    e.push((k, self.value()));
                    self.ws();
                    self.i += 1;
                    if self.b[self.i - 1] == b'}' {
                        return Json::Object(e);
                    }
                }
            }
            b'[' => {
                self.i += 1;
                let mut a = Vec::new();
                self.ws();
                if self.b[self.i] == b']' {
                    self.i += 1;
                    return Json::Array(a);
                }
                loop {
                    a.push(self.value());
                    self.ws();
                    self.i += 1;
                    if self.b[self.i - 1] == b']' {
                        return Json::Array(a);
                    }
                }
            }
            b'"' => Json::Str(self.string()),
            b't' => { self.i += 4; Json::Bool(true) }
            b'f' => { self.i += 5; Json::Bool(false) }
            b'n' => { self.i += 4; Json::Null }
            _ => {
                let start = self.i;
                while self.i < self.b.len() && b"+-0123456789.eE".contains(&self.b[self.i]) {
                    self.i += 1;
                }
                Json::Num(std::str::from_utf8(&self.b[start..self.i]).unwrap().parse().unwrap())
            }
        }
    }
    fn string(&mut self) -> String {
        self.eat(b'"');
        let mut s = String::new();
        loop {
            let c = self.b[self.i];
            self.i += 1;
            match c {
                b'"' => return s,
                b'\\' => {
                    let e = self.b[self.i];
                    self.i += 1;
                    match e {
                        b'n' => s.push('\n'),
                        b't' => s.push('\t'),
                        b'u' => {
                            let h = std::str::from_utf8(&self.b[self.i..self.i + 4]).unwrap();
                            s.push(char::from_u32(u32::from_str_radix(h, 16).unwrap()).unwrap_or('?'));
                            self.i += 4;
                        }
                        other => s.push(other as char),
                    }
                }
                _ => {
                    // copy a whole UTF-8 sequence
                    let start = self.i - 1;
                    let mut end = self.i;
                    while end < self.b.len() && (self.b[end] & 0xc0) == 0x80 {
                        end += 1;
                    }
                    s.push_str(std::str::from_utf8(&self.b[start..end]).unwrap());
                    self.i = end;
                }
            }
        }
    }
}

// ---- numerics ---------------------------------------------------------------------------------------

/// ‖a − b‖ / ‖b‖ (Frobenius), float64.
pub fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut num, mut den) = (0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        num += (x - y) * (x - y);
        den += y * y;
    }
    (num / den.max(1e-300)).sqrt()
}

/// y[m × rows] = x[m × cols] · W[rows × cols]ᵀ in float64.
pub fn matmul_t(x: &[f64], w: &[f64], m: usize, rows: usize, cols: usize) -> Vec<f64> {
    let mut y = vec![0.0; m * rows];
    for t in 0..m {
        for r in 0..rows {
            let mut acc = 0.0;
            for c in 0..cols {
                acc += x[t * cols + c] * w[r * cols + c];
            }
            y[t * rows + r] = acc;
        }
    }
    y
}

/// Deterministic inputs in [-1, 1).
pub fn inputs(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0) as f32
        })
        .collect()
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

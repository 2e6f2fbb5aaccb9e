//! Loads a [`Snapshot`] from YAML files and directories, as `tollbridge run` and `check` do.
//!
//! Files hold the objects a cluster would: multi-document YAML, `.yaml`/`.yml`, directories
//! walked recursively in name order. Objects without a namespace are in `default`; without a
//! generation they are at generation 1. Kinds tollbridge does not read are skipped with a
//! warning. Errors name the file, the document and the field. Large files are parsed in parts on
//! every core; reloads through a [`DocumentCache`] parse only the documents that changed.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tollbridge_local::fast_hash::FastMap;

use crate::parallel;
use crate::snapshot::Snapshot;

/// One problem with one document of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub file: PathBuf,
    /// 1-based index of the YAML document in the file; 0 for file-level errors.
    pub document: usize,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.document == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{} (document {}): {}", self.file.display(), self.document, self.message)
        }
    }
}

/// Every error found while loading; loading goes on after an error so all are reported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadErrors(pub Vec<LoadError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A loaded snapshot and notes about documents that were skipped.
#[derive(Debug, Default)]
pub struct Loaded {
    pub snapshot: Snapshot,
    pub warnings: Vec<String>,
    /// Which load through a [`DocumentCache`] this is (0: none).
    load: u64,
}

/// Loads every YAML file under `paths` into one snapshot.
pub fn load_paths(paths: &[PathBuf], validation: Validation) -> Result<Loaded, LoadErrors> {
    let mut loader = Loader { validation, ..Loader::default() };
    loader.add_paths(paths);
    loader.finish()
}

/// What a field the object's kind does not have (a misspelling, an experimental field) makes
/// of its document, as kubectl's `--validate`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Validation {
    /// The document is an error naming the file, the document, the object and the field.
    #[default]
    Strict,
    /// The document is loaded without the field, and a warning names it.
    Warn,
    /// The document is loaded without the field, silently.
    Ignore,
}

/// Loads YAML text (as if read from `origin`) into a snapshot, strictly.
pub fn load_str(origin: &Path, text: &str) -> Result<Loaded, LoadErrors> {
    let mut loader = Loader::default();
    loader.add_text(origin, text);
    loader.finish()
}

/// Loads YAML text as [`load_str`] does, parsing a file that splits into documents in `parts`
/// parts on as many threads, whatever its size (for tests that compare it with one stream).
#[doc(hidden)]
pub fn load_str_in_parts(origin: &Path, text: &str, parts: usize) -> Result<Loaded, LoadErrors> {
    let mut loader = Loader { parts: Some(parts), ..Loader::default() };
    loader.add_text(origin, text);
    loader.finish()
}

/// The YAML files a path names: itself, or every `.yaml`/`.yml` below it, sorted.
pub fn yaml_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot open: {e}"))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(path)
        .map_err(|e| format!("cannot list directory: {e}"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            out.extend(yaml_files(&entry)?);
        } else if entry.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(entry);
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeMeta {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

/// The objects of the last load, and where each of its documents' texts put them, so that a
/// reload parses only the documents that changed and copies the others from there.
///
/// A load through the cache is only remembered once it is handed back with
/// [`DocumentCache::remember`]: the cache keeps that one copy of the objects instead of a copy of
/// its own made during the load.
#[derive(Default)]
pub struct DocumentCache {
    /// The snapshot of the last remembered load.
    snapshot: Snapshot,
    /// Document text → what it held in `snapshot`.
    documents: Documents,
    /// The last load (its number), its documents and its list lengths, until it is remembered.
    pending: Option<(u64, Documents, Vec<usize>)>,
    /// Loads made through the cache so far.
    loads: u64,
}

/// Document text → what it held.
type Documents = FastMap<Arc<str>, Cached>;

/// What a cached document held.
enum Cached {
    Empty,
    Skipped {
        api_version: String,
        kind: String,
    },
    /// The object at this index of its kind's list in the cache's snapshot, and the fields it
    /// had that its kind does not (checked again on every load, as a parsed document's are).
    Object(Kind, usize, Unknown),
}

impl DocumentCache {
    /// Number of documents kept.
    pub fn len(&self) -> usize {
        self.documents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
    }

    /// Keeps the objects of `loaded`, the last load through this cache, for the next load to
    /// copy from: its objects must be as loaded (`now` aside). Given any other load (or one
    /// whose lists changed since), the cache forgets everything and the next load parses all.
    pub fn remember(&mut self, loaded: Loaded) {
        match self.pending.take() {
            Some((load, documents, lengths))
                if load == loaded.load && lengths == list_lengths(&loaded.snapshot) =>
            {
                self.documents = documents;
                self.snapshot = loaded.snapshot;
            }
            _ => {
                self.documents = Documents::default();
                self.snapshot = Snapshot::default();
            }
        }
    }

    fn contains(&self, text: &str) -> bool {
        self.documents.contains_key(text)
    }

    /// The document `text` held, copied out of the cache, and the cache's key for it.
    fn copy(&self, text: &str) -> Option<(Document, Arc<str>)> {
        let (key, cached) = self.documents.get_key_value(text)?;
        let document = match cached {
            Cached::Empty => Document::Empty,
            Cached::Skipped { api_version, kind } => {
                Document::Skipped { api_version: api_version.clone(), kind: kind.clone() }
            }
            Cached::Object(kind, index, unknown) => {
                Document::Object(Box::new(Object::copy(&self.snapshot, *kind, *index)?), unknown.clone())
            }
        };
        Some((document, key.clone()))
    }
}

/// Loads every YAML file under `paths`, parsing only the documents `cache` does not hold.
/// The result, warnings and errors are those of [`load_paths`].
pub fn load_paths_cached(
    paths: &[PathBuf],
    cache: &mut DocumentCache,
    validation: Validation,
) -> Result<Loaded, LoadErrors> {
    let mut loader = Loader { cache: Some(cache), validation, ..Loader::default() };
    loader.add_paths(paths);
    loader.finish()
}

/// Loads YAML text as [`load_str`] does, parsing only the documents `cache` does not hold.
pub fn load_str_cached(
    origin: &Path,
    text: &str,
    cache: &mut DocumentCache,
    validation: Validation,
) -> Result<Loaded, LoadErrors> {
    let mut loader = Loader { cache: Some(cache), validation, ..Loader::default() };
    loader.add_text(origin, text);
    loader.finish()
}

/// One document, parsed and typed, before the loader's defaults and duplicate checks.
enum Document {
    Empty,
    /// Boxed: objects are kilobytes, and documents move through vectors and the cache. With
    /// the paths of the fields the document has and its kind does not (left out).
    Object(Box<Object>, Unknown),
    /// A kind tollbridge does not read.
    Skipped {
        api_version: String,
        kind: String,
    },
}

impl Document {
    fn object(&self) -> Option<&Object> {
        match self {
            Document::Object(object, _) => Some(object),
            _ => None,
        }
    }
}

macro_rules! objects {
    ($($variant:ident: $group:literal $kind:literal $t:ty, $list:ident, $namespaced:literal;)*) => {
        /// An object of a kind tollbridge reads.
        enum Object {
            $($variant($t),)*
        }

        /// The kinds tollbridge reads.
        #[derive(Clone, Copy)]
        enum Kind {
            $($variant,)*
        }

        /// Makes room in `snapshot`'s lists for `objects`: growing a list of large objects
        /// copies them all.
        fn reserve<'o>(snapshot: &mut Snapshot, objects: impl Iterator<Item = &'o Object>) {
            let mut counts = [0; [$(Kind::$variant),*].len()];
            for object in objects {
                counts[object.kind() as usize] += 1;
            }
            let mut counts = counts.into_iter();
            $(snapshot.$list.reserve(counts.next().unwrap_or(0));)*
        }

        /// The length of each kind's list in `snapshot`.
        fn list_lengths(snapshot: &Snapshot) -> Vec<usize> {
            vec![$(snapshot.$list.len(),)*]
        }

        impl Object {
            /// The object of `group`/`kind` in `value`; `None` for a kind tollbridge does not read.
            fn parse(group: &str, kind: &str, value: serde_yaml::Value) -> Option<Result<(Object, Unknown), String>> {
                match (group, kind) {
                    $(($group, $kind) => Some(typed(value).map(|(object, unknown)| (Object::$variant(object), unknown))),)*
                    _ => None,
                }
            }

            fn kind(&self) -> Kind {
                match self {
                    $(Object::$variant(_) => Kind::$variant,)*
                }
            }

            /// A copy of the object at `index` of `kind`'s list in `snapshot`.
            fn copy(snapshot: &Snapshot, kind: Kind, index: usize) -> Option<Object> {
                match kind {
                    $(Kind::$variant => snapshot.$list.get(index).cloned().map(Object::$variant),)*
                }
            }

            /// Fills in defaults (again, for a copy: they do not change it), appends the object
            /// to its list and returns its `Kind ns/name` and where it went.
            fn push_into(self, snapshot: &mut Snapshot) -> Result<(String, Cached), String> {
                match self {
                    $(Object::$variant(mut object) => {
                        let id = with_defaults(&mut object.metadata, $namespaced)?;
                        snapshot.$list.push(object);
                        Ok((format!("{} {id}", $kind), Cached::Object(Kind::$variant, snapshot.$list.len() - 1, Unknown::new())))
                    })*
                }
            }
        }
    };
}

objects! {
    GatewayClass: "gateway.networking.k8s.io" "GatewayClass" crate::api::gateway::GatewayClass, gateway_classes, false;
    Gateway: "gateway.networking.k8s.io" "Gateway" crate::api::gateway::Gateway, gateways, true;
    HttpRoute: "gateway.networking.k8s.io" "HTTPRoute" crate::api::gateway::HTTPRoute, http_routes, true;
    GrpcRoute: "gateway.networking.k8s.io" "GRPCRoute" crate::api::gateway::GRPCRoute, grpc_routes, true;
    BackendTlsPolicy: "gateway.networking.k8s.io" "BackendTLSPolicy" crate::api::gateway::BackendTLSPolicy, backend_tls_policies, true;
    ReferenceGrant: "gateway.networking.k8s.io" "ReferenceGrant" crate::api::gateway::ReferenceGrant, reference_grants, true;
    Namespace: "" "Namespace" k8s_openapi::api::core::v1::Namespace, namespaces, false;
    Service: "" "Service" k8s_openapi::api::core::v1::Service, services, true;
    Secret: "" "Secret" k8s_openapi::api::core::v1::Secret, secrets, true;
    ConfigMap: "" "ConfigMap" k8s_openapi::api::core::v1::ConfigMap, config_maps, true;
    EndpointSlice: "discovery.k8s.io" "EndpointSlice" k8s_openapi::api::discovery::v1::EndpointSlice, endpoint_slices, true;
    ProviderConfig: "tollbridge.dev" "ProviderConfig" crate::api::tollbridge::ProviderConfig, provider_configs, false;
    QuotaPolicy: "tollbridge.dev" "QuotaPolicy" crate::api::tollbridge::QuotaPolicy, quota_policies, true;
    ApiKey: "tollbridge.dev" "ApiKey" crate::api::tollbridge::ApiKey, api_keys, true;
}

/// Types one YAML document; the error names the field.
fn parse_document(value: serde_yaml::Value) -> Result<Document, String> {
    match value {
        serde_yaml::Value::Null => return Ok(Document::Empty),
        serde_yaml::Value::Sequence(_) | serde_yaml::Value::String(_) => {
            return Err("expected a Kubernetes object (a mapping with apiVersion and kind)".into())
        }
        _ => {}
    }
    let type_meta = TypeMeta::deserialize(&value).map_err(|e| format!("invalid object: {e}"))?;
    if type_meta.kind == "List" {
        return Err("kind List is not supported; write one document per object".into());
    }
    if type_meta.kind.is_empty() {
        return Err("missing `kind`".into());
    }
    let group = type_meta.api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    match Object::parse(group, &type_meta.kind, value) {
        Some(object) => object.map(|(object, unknown)| Document::Object(Box::new(object), unknown)),
        None => Ok(Document::Skipped { api_version: type_meta.api_version, kind: type_meta.kind }),
    }
}

#[derive(Default)]
struct Loader<'c> {
    snapshot: Snapshot,
    warnings: Vec<String>,
    errors: Vec<LoadError>,
    /// `Kind ns/name` → the file (index in `files`) and document it was first seen in.
    seen: FastMap<String, (usize, usize)>,
    /// Files read so far, in order.
    files: Vec<PathBuf>,
    cache: Option<&'c mut DocumentCache>,
    /// With a cache: each document's text → what it put in `snapshot`.
    remembered: Documents,
    /// Threads to parse a file's documents on; `None` picks by cores and document count.
    parts: Option<usize>,
    validation: Validation,
}

impl Loader<'_> {
    fn error(&mut self, file: &Path, document: usize, message: impl Into<String>) {
        self.errors.push(LoadError { file: file.to_path_buf(), document, message: message.into() });
    }

    fn add_paths(&mut self, paths: &[PathBuf]) {
        for path in paths {
            match yaml_files(path) {
                Ok(files) => {
                    for file in files {
                        match std::fs::read_to_string(&file) {
                            Ok(text) => self.add_text(&file, &text),
                            Err(e) => self.error(&file, 0, format!("cannot read: {e}")),
                        }
                    }
                }
                Err(e) => self.error(path, 0, e),
            }
        }
    }

    fn finish(self) -> Result<Loaded, LoadErrors> {
        let mut load = 0;
        if let Some(cache) = self.cache {
            cache.loads += 1;
            load = cache.loads;
            cache.pending =
                self.errors.is_empty().then(|| (load, self.remembered, list_lengths(&self.snapshot)));
        }
        if self.errors.is_empty() {
            Ok(Loaded { snapshot: self.snapshot, warnings: self.warnings, load })
        } else {
            Err(LoadErrors(self.errors))
        }
    }

    fn add_text(&mut self, file: &Path, text: &str) {
        self.files.push(file.to_path_buf());
        let chunks = split_documents(text);
        if let Some(chunks) = &chunks {
            if let Some(documents) = self.cached_documents(chunks) {
                reserve(&mut self.snapshot, documents.iter().filter_map(|(document, _)| document.object()));
                for (i, (document, key)) in documents.into_iter().enumerate() {
                    self.add_document(file, i + 1, Ok(document), Some(key));
                }
                return;
            }
        }
        // Parts of the file on every core, or the whole file through one YAML stream (a syntax
        // error ends it, so its message and position are the parser's).
        let parts =
            |chunks: &[&str]| self.parts.unwrap_or_else(|| parallel::parts_for(chunks.len(), PART_SIZE));
        let (documents, syntax_error) =
            match chunks.as_deref().and_then(|c| parse_in_parts(text, c, parts(c))) {
                Some(documents) => (documents, None),
                None => parse_stream(text),
            };
        reserve(&mut self.snapshot, documents.iter().flatten().filter_map(Document::object));
        // Documents are cached by their text only when the split and the parser agree.
        let chunks = chunks.filter(|c| syntax_error.is_none() && c.len() == documents.len());
        for (i, document) in documents.into_iter().enumerate() {
            self.add_document(file, i + 1, document, chunks.as_ref().map(|c| Arc::from(c[i])));
        }
        if let Some((number, message)) = syntax_error {
            self.error(file, number, message);
        }
    }

    /// The documents of a file from the cache, parsing the few that changed one by one; `None`
    /// when the whole file is better parsed as one stream (many changed, or one does not parse).
    fn cached_documents(&mut self, chunks: &[&str]) -> Option<Vec<(Document, Arc<str>)>> {
        let cache = self.cache.as_deref()?;
        let changed = chunks.iter().filter(|chunk| !cache.contains(chunk)).count();
        // Parsing a document alone costs tens of microseconds more than within a stream.
        if changed > 64 && changed * 8 > chunks.len() {
            return None;
        }
        chunks
            .iter()
            .map(|chunk| cache.copy(chunk).or_else(|| Some((parse_alone(chunk)?, Arc::from(*chunk)))))
            .collect()
    }

    /// Adds one document; `key`, its text, keys it in the cache.
    fn add_document(
        &mut self,
        file: &Path,
        number: usize,
        document: Result<Document, String>,
        key: Option<Arc<str>>,
    ) {
        match self.accept(file, number, document) {
            Ok(cached) => {
                if let (Some(key), Some(_)) = (key, &self.cache) {
                    self.remembered.insert(key, cached);
                }
            }
            Err(message) => self.error(file, number, message),
        }
    }

    fn accept(
        &mut self,
        file: &Path,
        number: usize,
        document: Result<Document, String>,
    ) -> Result<Cached, String> {
        let origin = || format!("{} (document {number})", file.display());
        match document? {
            Document::Empty => Ok(Cached::Empty),
            Document::Skipped { api_version, kind } => {
                self.warnings
                    .push(format!("{}: skipped {api_version} {kind}: not a kind tollbridge reads", origin()));
                Ok(Cached::Skipped { api_version, kind })
            }
            Document::Object(object, unknown) => {
                // Pushed even when refused below: a load with an error is never served.
                let (key, mut cached) = (*object).push_into(&mut self.snapshot)?;
                if !unknown.is_empty() {
                    let fields = unknown.join(", ");
                    let what = &key;
                    match self.validation {
                        Validation::Strict => {
                            return Err(format!(
                                "{what}: unknown field{} {fields} (misspelled, or not in this kind's \
                                 version; --validate=warn loads it without them)",
                                if unknown.len() > 1 { "s" } else { "" }
                            ))
                        }
                        Validation::Warn => self
                            .warnings
                            .push(format!("{}: {what}: unknown field(s) left out: {fields}", origin())),
                        Validation::Ignore => {}
                    }
                }
                if let Cached::Object(_, _, kept) = &mut cached {
                    *kept = unknown;
                }
                if let Some(&(first_file, first_number)) = self.seen.get(&key) {
                    let first = self.files[first_file].display();
                    return Err(format!(
                        "duplicate {key}: already defined in {first} (document {first_number})"
                    ));
                }
                self.seen.insert(key, (self.files.len() - 1, number));
                Ok(cached)
            }
        }
    }
}

/// A document typed, or why it cannot be.
type Parsed = Result<Document, String>;

/// Documents each thread of a parallel load parses at least: below this, one stream is faster.
const PART_SIZE: usize = 256;

/// Every document of `text`, typed, and the YAML syntax error (with its document number) that
/// ended the stream, if any.
fn parse_stream(text: &str) -> (Vec<Parsed>, Option<(usize, String)>) {
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        match serde_yaml::Value::deserialize(document) {
            Ok(value) => documents.push(parse_document(value)),
            Err(e) => {
                let number = documents.len() + 1;
                return (documents, Some((number, format!("invalid YAML: {e}"))));
            }
        }
    }
    (documents, None)
}

/// The documents of `text` (split into `chunks`) parsed as `parts` streams on as many threads;
/// `None` for fewer than two parts, or when a part does not read as its chunks (a syntax error,
/// then reported by the whole stream).
fn parse_in_parts(text: &str, chunks: &[&str], parts: usize) -> Option<Vec<Parsed>> {
    if parts < 2 || chunks.len() < parts {
        return None;
    }
    let offset = |chunk: &str| chunk.as_ptr() as usize - text.as_ptr() as usize;
    let parsed = parallel::in_parts("tollbridge-yaml", chunks, parts, |part| {
        let (first, last) = (part[0], part[part.len() - 1]);
        match parse_stream(&text[offset(first)..offset(last) + last.len()]) {
            (documents, None) if documents.len() == part.len() => Some(documents),
            _ => None,
        }
    })?;
    let mut documents = Vec::with_capacity(chunks.len());
    for part in parsed {
        documents.extend(part?);
    }
    Some(documents)
}

/// One document's text parsed alone; `None` when it is not exactly one valid, typed document.
fn parse_alone(text: &str) -> Option<Document> {
    parse_document(single_value(text)?).ok()
}

/// The value of `text` when the parser reads it as exactly one document (an empty text is one
/// null document).
fn single_value(text: &str) -> Option<serde_yaml::Value> {
    let mut stream = serde_yaml::Deserializer::from_str(text);
    let value = serde_yaml::Value::deserialize(stream.next()?).ok()?;
    stream.next().is_none().then_some(value)
}

/// The text of each YAML document in `text`, split at `---` lines, as the YAML stream counts
/// them; `None` for what is left to the parser: directives (`%`), document ends (`...`), byte
/// order marks and line breaks other than `\n` and `\r\n` (they move document boundaries), and
/// text before the first `---` that is not plainly empty.
fn split_documents(text: &str) -> Option<Vec<&str>> {
    if !has_plain_breaks(text) {
        return None;
    }
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.starts_with('%') || line.starts_with("...") {
            return None;
        }
        if is_document_start(line) && offset > 0 {
            chunks.push(&text[start..offset]);
            start = offset;
        }
        offset += line.len();
    }
    chunks.push(&text[start..]);
    // Before the first `---`: a document, or nothing but comments and blank lines (checked by
    // the parser: a control character there is an error, not a blank).
    if !is_document_start(chunks[0]) && !has_content(chunks[0]) {
        if single_value(chunks[0]) != Some(serde_yaml::Value::Null) {
            return None;
        }
        chunks.remove(0);
    }
    Some(chunks)
}

/// No byte order mark and no line break but `\n` and `\r\n`: one pass over the bytes.
fn has_plain_breaks(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().all(|(i, &b)| match b {
        b'\r' => bytes.get(i + 1) == Some(&b'\n'),
        // U+0085 (NEL); U+2028 and U+2029 (line and paragraph separators); U+FEFF (BOM).
        0xC2 => bytes.get(i + 1) != Some(&0x85),
        0xE2 => !matches!(bytes.get(i + 1..i + 3), Some([0x80, 0xA8 | 0xA9])),
        0xEF => !matches!(bytes.get(i + 1..i + 3), Some([0xBB, 0xBF])),
        _ => true,
    })
}

/// A `---` marker line: `---` alone or followed by a space, a tab or a line end.
fn is_document_start(line: &str) -> bool {
    line.strip_prefix("---").is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\n', '\r']))
}

fn has_content(text: &str) -> bool {
    text.lines().any(|line| {
        let line = line.trim_start_matches([' ', '\t', '\r']);
        !line.is_empty() && !line.starts_with('#')
    })
}

/// The paths of the fields a document has that its kind does not, as `spec.rules[0].name`.
type Unknown = Vec<String>;

/// Parses one object, with the fields its type does not have; an error names the field.
fn typed<T: DeserializeOwned>(value: serde_yaml::Value) -> Result<(T, Unknown), String> {
    let mut unknown = Unknown::new();
    let mut record = |path: serde_ignored::Path<'_>| {
        // Every object has these; read before typing (`TypeMeta`), not all types keep them.
        if !matches!(&path, serde_ignored::Path::Map { parent: serde_ignored::Path::Root, key }
            if key == "apiVersion" || key == "kind")
        {
            unknown.push(field_path(&path));
        }
    };
    let object = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(value, &mut record))
        .map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                inner.to_string()
            } else if path.starts_with("data.") || path.starts_with("stringData.") {
                // A Secret's values: serde's message would quote the value.
                format!("field `{path}`: not a valid value (not shown: it may be a secret)")
            } else {
                format!("field `{path}`: {inner}")
            }
        })?;
    Ok((object, unknown))
}

/// A field's path as kubectl and the errors above write it: `spec.rules[0].backendRef`.
fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => match field_path(parent) {
            parent if parent.is_empty() => key.to_string(),
            parent => format!("{parent}.{key}"),
        },
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => {
            field_path(parent)
        }
    }
}

/// Defaults a loaded object's namespace and generation; returns its `ns/name` (or `name`).
fn with_defaults(meta: &mut ObjectMeta, namespaced: bool) -> Result<String, String> {
    let name = meta.name.clone().filter(|n| !n.is_empty()).ok_or("missing metadata.name")?;
    if namespaced {
        meta.namespace.get_or_insert_with(|| "default".to_string());
    } else {
        meta.namespace = None;
    }
    meta.generation.get_or_insert(1);
    Ok(match &meta.namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Loaded, LoadErrors> {
        load_str(Path::new("test.yaml"), text)
    }

    /// Checks a load gave the objects, warnings and errors of a fresh load of `text`; returns
    /// the load when it loaded.
    fn assert_same(loaded: Result<Loaded, LoadErrors>, text: &str) -> Option<Loaded> {
        match (loaded, load(text)) {
            (Ok(loaded), Ok(fresh)) => {
                assert_eq!(format!("{:?}", loaded.snapshot), format!("{:?}", fresh.snapshot), "{text}");
                assert_eq!(loaded.warnings, fresh.warnings, "{text}");
                Some(loaded)
            }
            (loaded, fresh) => {
                assert_eq!(loaded.err(), fresh.err(), "{text}");
                None
            }
        }
    }

    /// Loads each text in turn through one cache and checks each result equals an uncached load.
    fn assert_cache_agrees(texts: &[&str]) -> DocumentCache {
        let mut cache = DocumentCache::default();
        for text in texts {
            if let Some(loaded) = assert_same(
                load_str_cached(Path::new("test.yaml"), text, &mut cache, Validation::Strict),
                text,
            ) {
                cache.remember(loaded);
            }
        }
        cache
    }

    /// `count` HTTPRoutes `r0`, `r1`…, each followed by a `---` line.
    fn routes(count: usize) -> String {
        (0..count).map(|i| ROUTE.replace("name: r}", &format!("name: r{i}}}")) + "---\n").collect()
    }

    const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n";
    const ROUTE: &str =
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec: {}\n";

    #[test]
    fn a_cached_load_equals_a_fresh_one_through_edits() {
        let two = format!("{SERVICE}---\n{ROUTE}");
        let renamed = two.replace("name: r}", "name: r2}");
        let cache = assert_cache_agrees(&[
            &two,
            &two,
            &renamed,
            &format!("# leading comment\n---\n{renamed}"),
            &format!("{renamed}---\n---\n# trailing\n"),
            &format!("{SERVICE}---\n{SERVICE}"),
            &format!("{SERVICE}--- # marker with a comment\n{ROUTE}"),
            &format!("--- {{apiVersion: v1, kind: Namespace, metadata: {{name: n}}}}\n{ROUTE}"),
            &format!("{SERVICE}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\n"),
            &format!("{SERVICE}---\r\n{ROUTE}"),
            &format!("%YAML 1.2\n---\n{SERVICE}...\n---\n{ROUTE}"),
            &format!("{SERVICE}---\nkind: [unclosed\n---\n{ROUTE}"),
            &format!("{SERVICE}---\n{}", ROUTE.replace("spec: {}", "spec: {parentRefs: 3}")),
            &format!("{SERVICE}---\ndescription: |\n  text\n---\n{ROUTE}"),
            "\x0c",
            &format!("# comment \x0c\n---\n{SERVICE}"),
            "\u{feff}#\n--- {apiVersion: v1, kind: Service, metadata: {name: a}}\r--- {apiVersion: v1, kind: Service, metadata: {name: b}}\n",
            "\u{feff}#\n",
            "\u{feff}# header\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n",
            "# a\u{85}---\napiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n",
            "# a\u{2028}---\napiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n",
            "# é ü \u{2026}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n",
            "",
            &two,
        ]);
        assert_eq!(cache.len(), 2, "only the last load's documents are kept");
    }

    #[test]
    fn a_file_parsed_in_parts_loads_as_one_stream() {
        let many = routes(10);
        let texts = [
            many.clone(),
            format!("# header\n---\n{many}"),
            many.replace("name: r3}", "name: [r3}"),
            many.replace("spec: {}", "spec: {parentRefs: 3}"),
            many.replace("name: r4}", "name: r5}"),
            format!(
                "{SERVICE}---\n{SERVICE}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\n"
            ),
        ];
        for text in &texts {
            for parts in [2, 3, 7] {
                assert_same(load_str_in_parts(Path::new("test.yaml"), text, parts), text);
            }
        }
        let chunks = split_documents(&texts[0]).unwrap();
        assert_eq!(parse_in_parts(&texts[0], &chunks, 3).map(|documents| documents.len()), Some(11));
        assert!(
            parse_in_parts(&texts[2], &split_documents(&texts[2]).unwrap(), 3).is_none(),
            "a syntax error"
        );
        let error = load(&texts[2]).unwrap_err().to_string();
        assert!(error.contains("(document 4): invalid YAML"), "{error}");
    }

    #[test]
    fn only_plain_line_breaks_are_split_by_the_cache() {
        assert!(has_plain_breaks("a: é…\r\nb: ü\n"));
        for text in ["a\rb", "a\u{85}b", "a\u{2028}b", "a\u{2029}b", "\u{feff}a", "a\r"] {
            assert!(!has_plain_breaks(text), "{text:?}");
        }
    }

    #[test]
    fn a_reload_parses_only_changed_documents() {
        let text = routes(100);
        let origin = Path::new("a.yaml");
        let mut cache = DocumentCache::default();
        let mut loaded = load_str_cached(origin, &text, &mut cache, Validation::Strict).unwrap();
        assert!(cache.is_empty(), "nothing is kept before the snapshot is remembered");
        // Marks r0 in the remembered snapshot: a reload that copies it, and does not parse it
        // again, shows the mark.
        loaded.snapshot.http_routes[0].metadata.uid = Some("from-the-cache".into());
        cache.remember(loaded);
        assert_eq!(cache.len(), 101, "100 routes and the empty document after the last `---`");
        let with_header = format!("# generated\n\n---\n{text}");
        assert_eq!(
            split_documents(&with_header).map(|chunks| chunks.len()),
            Some(101),
            "a header comment splits"
        );
        let edited = text.replace("name: r7}", "name: seven}");
        let loaded = load_str_cached(origin, &edited, &mut cache, Validation::Strict).unwrap();
        let routes = &loaded.snapshot.http_routes;
        assert_eq!(routes[0].metadata.uid.as_deref(), Some("from-the-cache"));
        assert_eq!(routes[7].metadata.name.as_deref(), Some("seven"));
        cache.remember(loaded);
        assert_eq!(cache.len(), 101);

        // A load that is not remembered leaves the cache serving the last one that was.
        let renamed = edited.replace("name: r8}", "name: eight}");
        load_str_cached(origin, &renamed, &mut cache, Validation::Strict).unwrap();
        let loaded = load_str_cached(origin, &edited, &mut cache, Validation::Strict).unwrap();
        let routes = &loaded.snapshot.http_routes;
        assert_eq!(routes[0].metadata.uid.as_deref(), Some("from-the-cache"));
        assert_eq!(routes[8].metadata.name.as_deref(), Some("r8"));

        // Another load than the last: everything is forgotten, and the next load is fresh.
        let earlier = load_str_cached(origin, &text, &mut cache, Validation::Strict).unwrap();
        load_str_cached(origin, &text, &mut cache, Validation::Strict).unwrap();
        cache.remember(earlier);
        assert!(cache.is_empty());
        let loaded = load_str_cached(origin, &edited, &mut cache, Validation::Strict).unwrap();
        assert_eq!(loaded.snapshot.http_routes[0].metadata.uid, None);

        // A document that does not parse alone sends the file through the stream: same errors.
        let broken = edited.replace("name: r9}", "name: [r9}");
        let err = load_str_cached(origin, &broken, &mut cache, Validation::Strict).unwrap_err();
        assert_eq!(err, load_str(origin, &broken).unwrap_err());
    }

    #[test]
    fn fills_namespace_and_generation_defaults() {
        let loaded = load(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec: {}\n",
        )
        .unwrap();
        let route = &loaded.snapshot.http_routes[0];
        assert_eq!(route.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(route.metadata.generation, Some(1));
    }

    #[test]
    fn errors_name_file_document_and_field() {
        let err = load(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  gatewayClassName: c\n  listeners:\n  - name: http\n    port: eighty\n    protocol: HTTP\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("test.yaml (document 2)"), "{text}");
        assert!(text.contains("spec.listeners[0].port"), "{text}");
    }

    /// A route whose rule says `backendRef` (for `backendRefs`) and a Service with a misspelled
    /// label map: what each validation mode makes of them.
    const MISSPELLED: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: shop, namespace: web}\n\
                              spec:\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /}}]\n    backendRef: [{name: api, port: 80}]\n\
                              ---\napiVersion: v1\nkind: Service\nmetadata: {name: api, lables: {app: api}}\nspec: {ports: [{port: 80}]}\n";

    fn load_as(text: &str, validation: Validation) -> Result<Loaded, LoadErrors> {
        let mut loader = Loader { validation, ..Loader::default() };
        loader.add_text(Path::new("test.yaml"), text);
        loader.finish()
    }

    #[test]
    fn unknown_fields_are_errors_naming_file_document_object_and_field_unless_told_otherwise() {
        let err = load_as(MISSPELLED, Validation::Strict).unwrap_err();
        assert_eq!(err.0.len(), 2, "{err}");
        let text = err.to_string();
        assert!(text.contains("test.yaml (document 1)"), "{text}");
        assert!(text.contains("HTTPRoute web/shop: unknown field spec.rules[0].backendRef ("), "{text}");
        assert!(text.contains("test.yaml (document 2)"), "{text}");
        assert!(text.contains("Service default/api: unknown field metadata.lables ("), "{text}");
        assert_eq!(load(MISSPELLED).unwrap_err().to_string(), text, "strict is the default");

        let warned = load_as(MISSPELLED, Validation::Warn).unwrap();
        assert_eq!(warned.snapshot.http_routes.len(), 1);
        assert!(
            warned.snapshot.http_routes[0].spec.rules[0].backend_refs.is_empty(),
            "the field is left out"
        );
        assert_eq!(warned.warnings.len(), 2, "{:?}", warned.warnings);
        assert!(warned.warnings[0]
            .contains("HTTPRoute web/shop: unknown field(s) left out: spec.rules[0].backendRef"));

        let ignored = load_as(MISSPELLED, Validation::Ignore).unwrap();
        assert_eq!((ignored.snapshot.services.len(), ignored.warnings.len()), (1, 0));
    }

    #[test]
    fn a_cached_reload_warns_of_unknown_fields_as_the_first_load_did() {
        let mut cache = DocumentCache::default();
        let origin = Path::new("test.yaml");
        let first = load_str_cached(origin, MISSPELLED, &mut cache, Validation::Warn).unwrap();
        assert_eq!(first.warnings.len(), 2, "{:?}", first.warnings);
        let warnings = first.warnings.clone();
        cache.remember(first);
        let again = load_str_cached(origin, MISSPELLED, &mut cache, Validation::Warn).unwrap();
        assert_eq!(again.warnings, warnings);
        cache.remember(again);
        let strict = load_str_cached(origin, MISSPELLED, &mut cache, Validation::Strict).unwrap_err();
        assert_eq!(strict.0.len(), 2, "a cached document is held to the mode of the load: {strict}");
    }

    #[test]
    fn a_secrets_value_is_never_quoted_in_an_error() {
        let text =
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {api-key: [hunter2-not-base64]}\n";
        let err = load(text).unwrap_err().to_string();
        assert!(err.contains("field `data.api-key`") && !err.contains("hunter2"), "{err}");
    }

    #[test]
    fn a_field_given_twice_is_an_error() {
        let twice =
            "apiVersion: v1\nkind: Service\nmetadata: {name: api}\nspec: {ports: [{port: 80}]}\nspec: {}\n";
        let text = load_as(twice, Validation::Ignore).unwrap_err().to_string();
        assert!(text.contains("test.yaml (document 1)") && text.contains("duplicate"), "{text}");
    }

    #[test]
    fn skips_unknown_kinds_with_a_warning_and_rejects_duplicates() {
        let loaded = load("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n").unwrap();
        assert_eq!(loaded.warnings.len(), 1);
        let dup = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n";
        let err = load(&format!("{dup}---\n{dup}")).unwrap_err();
        assert!(err.to_string().contains("duplicate Service default/s"), "{err}");
    }

    #[test]
    fn invalid_yaml_is_reported_not_panicked() {
        let err = load("kind: [unclosed\n").unwrap_err();
        assert!(err.to_string().contains("invalid YAML"), "{err}");
        assert!(load("- a\n- b\n").is_err());
        assert!(load("apiVersion: v1\nkind: Service\nmetadata: {}\n")
            .unwrap_err()
            .to_string()
            .contains("metadata.name"));
    }
}

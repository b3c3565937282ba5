#include "cp2/io/pickle.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "cp2/common.h"

namespace cp2::py {

namespace {
ObjPtr make(Kind k) {
  auto o = std::make_shared<Object>();
  o->kind = k;
  return o;
}
}  // namespace

ObjPtr none() { return make(Kind::None); }
ObjPtr boolean(bool v) { auto o = make(Kind::Bool); o->b = v; return o; }
ObjPtr integer(int64_t v) { auto o = make(Kind::Int); o->i = v; return o; }
ObjPtr real(double v) { auto o = make(Kind::Float); o->f = v; return o; }
ObjPtr str(std::string v) { auto o = make(Kind::Str); o->s = std::move(v); return o; }
ObjPtr list(std::vector<ObjPtr> v) { auto o = make(Kind::List); o->items = std::move(v); return o; }
ObjPtr tuple(std::vector<ObjPtr> v) { auto o = make(Kind::Tuple); o->items = std::move(v); return o; }
ObjPtr dict(bool ordered) { auto o = make(Kind::Dict); o->ordered = ordered; return o; }
ObjPtr tensor(at::Tensor t) { auto o = make(Kind::Tensor); o->tensor = std::move(t); return o; }
void set(const ObjPtr& d, const std::string& key, ObjPtr value) { d->dict.emplace_back(str(key), std::move(value)); }

ObjPtr Object::get(const std::string& key) const {
  if (kind != Kind::Dict) return nullptr;
  for (const auto& kv : dict)
    if (kv.first->kind == Kind::Str && kv.first->s == key) return kv.second;
  return nullptr;
}

std::string Object::type_name() const {
  switch (kind) {
    case Kind::None: return "None";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::Str: return "str";
    case Kind::Bytes: return "bytes";
    case Kind::List: return "list";
    case Kind::Tuple: return "tuple";
    case Kind::Dict: return ordered ? "OrderedDict" : "dict";
    case Kind::Set: return "set";
    case Kind::Tensor: return "Tensor";
    case Kind::Global: return "global " + s;
    case Kind::Instance: return "object " + s;
  }
  return "?";
}

static const std::vector<std::pair<std::string, at::ScalarType>>& storage_table() {
  static const std::vector<std::pair<std::string, at::ScalarType>> t = {
      {"FloatStorage", at::kFloat},  {"DoubleStorage", at::kDouble}, {"HalfStorage", at::kHalf},
      {"BFloat16Storage", at::kBFloat16}, {"LongStorage", at::kLong}, {"IntStorage", at::kInt},
      {"ShortStorage", at::kShort},  {"CharStorage", at::kChar},     {"ByteStorage", at::kByte},
      {"BoolStorage", at::kBool},    {"UntypedStorage", at::kByte}};
  return t;
}

at::ScalarType storage_dtype(const std::string& cls, const std::string& where) {
  std::string name = cls.substr(cls.rfind('.') + 1);
  for (const auto& [n, t] : storage_table())
    if (n == name) return t;
  std::vector<std::string> valid;
  for (const auto& kv : storage_table()) valid.push_back(kv.first);
  throw Error(where + ": unsupported tensor storage type '" + cls + "'; expected one of: " + join(valid));
}

std::string storage_class(at::ScalarType t) {
  for (const auto& [n, s] : storage_table())
    if (s == t) return n;
  throw Error(std::string("cannot save tensors of dtype ") + c10::toString(t));
}

// ---------------------------------------------------------------------------------------
// Unpickler

namespace {

class Unpickler {
 public:
  Unpickler(std::string_view d, size_t& pos, const PersistentLoad& load, const std::string& where)
      : d_(d), pos_(pos), load_(load), where_(where) {}

  ObjPtr run() {
    for (;;) {
      uint8_t op = byte();
      switch (op) {
        case 0x80: byte(); break;                      // PROTO
        case 0x95: take(8); break;                     // FRAME
        case '.': {                                    // STOP
          if (stack_.empty()) fail("STOP with an empty stack");
          return stack_.back();
        }
        case 'N': push(none()); break;
        case 0x88: push(boolean(true)); break;
        case 0x89: push(boolean(false)); break;
        case 'I': {                                    // INT (text); "01"/"00" are bools
          std::string l = line();
          if (l == "01") push(boolean(true));
          else if (l == "00") push(boolean(false));
          else push(integer(text_int(l)));
          break;
        }
        case 'L': { std::string l = line(); if (!l.empty() && l.back() == 'L') l.pop_back(); push(integer(text_int(l))); break; }
        case 'J': { int32_t v; std::memcpy(&v, take(4), 4); push(integer(v)); break; }
        case 'K': push(integer(byte())); break;
        case 'M': { uint16_t v; std::memcpy(&v, take(2), 2); push(integer(v)); break; }
        case 0x8a: long_bytes(byte()); break;          // LONG1
        case 0x8b: long_bytes(u32()); break;           // LONG4
        case 'G': {                                    // BINFLOAT, big-endian
          const char* p = take(8);
          uint64_t bits = 0;
          for (int k = 0; k < 8; ++k) bits = (bits << 8) | static_cast<uint8_t>(p[k]);
          double v;
          std::memcpy(&v, &bits, 8);
          push(real(v));
          break;
        }
        case 'F': push(real(text_real(line()))); break;
        case 'X': { uint32_t n = u32(); push(str(std::string(take(n), n))); break; }
        case 0x8c: { uint8_t n = byte(); push(str(std::string(take(n), n))); break; }
        case 0x8d: { uint64_t n = u64(); push(str(std::string(take(n), n))); break; }
        case 'T': { uint32_t n = u32(); push(str(std::string(take(n), n))); break; }
        case 'U': { uint8_t n = byte(); push(str(std::string(take(n), n))); break; }
        case 'V': push(str(line())); break;
        case 'S': { std::string l = line(); if (l.size() >= 2) l = l.substr(1, l.size() - 2); push(str(l)); break; }
        case 'B': { uint32_t n = u32(); push(bytes(std::string(take(n), n))); break; }
        case 'C': { uint8_t n = byte(); push(bytes(std::string(take(n), n))); break; }
        case 0x8e: case 0x96: { uint64_t n = u64(); push(bytes(std::string(take(n), n))); break; }
        case ']': push(list()); break;
        case ')': push(tuple()); break;
        case '}': push(dict(false)); break;
        case 0x8f: push(make(Kind::Set)); break;
        case 'l': push(list(pop_mark())); break;
        case 't': push(tuple(pop_mark())); break;
        case 0x91: { auto s = make(Kind::Set); s->items = pop_mark(); push(s); break; }
        case 0x85: { auto a = pop(); push(tuple({a})); break; }
        case 0x86: { auto b = pop(); auto a = pop(); push(tuple({a, b})); break; }
        case 0x87: { auto c = pop(); auto b = pop(); auto a = pop(); push(tuple({a, b, c})); break; }
        case 'd': {
          auto items = pop_mark();
          auto o = dict(false);
          fill_dict(o, items);
          push(o);
          break;
        }
        case 'a': { auto v = pop(); target(Kind::List, "APPEND")->items.push_back(v); break; }
        case 'e': case 0x90: {                         // APPENDS / ADDITEMS
          auto items = pop_mark();
          auto& t = top();
          if (t->kind != Kind::List && t->kind != Kind::Set) fail("APPENDS to a " + t->type_name());
          t->items.insert(t->items.end(), items.begin(), items.end());
          break;
        }
        case 's': { auto v = pop(); auto k = pop(); fill_dict(target(Kind::Dict, "SETITEM"), {k, v}); break; }
        case 'u': { auto items = pop_mark(); fill_dict(target(Kind::Dict, "SETITEMS"), items); break; }
        case '(': marks_.push_back(stack_.size()); break;
        case '0': pop(); break;
        case '1': pop_mark(); break;
        case '2': push(top()); break;
        case 'c': { std::string m = line(); std::string n = line(); push(global(m + "." + n)); break; }
        case 0x93: { auto n = pop(); auto m = pop(); push(global(m->s + "." + n->s)); break; }
        case 'R': { auto args = pop(); auto fn = pop(); push(reduce(fn, args)); break; }
        case 0x81: { auto args = pop(); auto cls = pop(); push(reduce(cls, args)); break; }
        case 0x92: { pop(); auto args = pop(); auto cls = pop(); push(reduce(cls, args)); break; }
        case 'b': { auto st = pop(); build(top(), st); break; }
        case 'p': memo(text_index(line())); break;
        case 'q': memo(byte()); break;
        case 'r': memo(u32()); break;
        case 0x94: memo(memo_.size()); break;
        case 'g': push(recall(text_index(line()))); break;
        case 'h': push(recall(byte())); break;
        case 'j': push(recall(u32())); break;
        case 'Q': { auto pid = pop(); push(load_(pid)); break; }
        case 'P': push(load_(str(line()))); break;
        default: {
          char buf[8];
          std::snprintf(buf, sizeof buf, "0x%02x", op);
          fail(std::string("unsupported pickle opcode ") + buf);
        }
      }
    }
  }

 private:
  std::string message(const std::string& what) const {
    return where_ + ": cannot unpickle (" + what + " at byte " + std::to_string(pos_) +
           "); the file is truncated, corrupt or not a PyTorch checkpoint";
  }
  [[noreturn]] void fail(const std::string& what) const { throw Error(message(what)); }
  [[noreturn]] void end_of_data(const std::string& what, uint64_t needed) const {
    throw EndOfData(message(what), needed);
  }
  const char* take(size_t n) {
    if (n > d_.size() - pos_)  // not pos_ + n: a corrupt 8-byte length would wrap it round
      end_of_data("unexpected end of data, wanted " + std::to_string(n) + " more bytes",
                  n > UINT64_MAX - pos_ ? UINT64_MAX : uint64_t(pos_) + n);
    const char* p = d_.data() + pos_;
    pos_ += n;
    return p;
  }
  uint8_t byte() { return static_cast<uint8_t>(*take(1)); }
  uint32_t u32() { uint32_t v; std::memcpy(&v, take(4), 4); return v; }
  uint64_t u64() { uint64_t v; std::memcpy(&v, take(8), 8); return v; }
  // Text opcodes' numbers (protocol 0): the whole line must be one, else the file is corrupt
  // (std::stoll would take "12abc" and throw its own exception on "abc").
  int64_t text_int(const std::string& l) const {
    errno = 0;
    char* end = nullptr;
    const long long v = std::strtoll(l.c_str(), &end, 10);
    if (l.empty() || end != l.c_str() + l.size() || errno == ERANGE) fail("bad integer '" + l + "'");
    return v;
  }
  size_t text_index(const std::string& l) const {
    const int64_t v = text_int(l);
    if (v < 0) fail("bad memo key '" + l + "'");
    return static_cast<size_t>(v);
  }
  double text_real(const std::string& l) const {
    char* end = nullptr;
    const double v = std::strtod(l.c_str(), &end);
    if (l.empty() || end != l.c_str() + l.size()) fail("bad float '" + l + "'");
    return v;
  }
  std::string line() {
    size_t e = d_.find('\n', pos_);
    if (e == std::string_view::npos) end_of_data("unterminated text line", uint64_t(d_.size()) + 1);
    std::string s(d_.substr(pos_, e - pos_));
    pos_ = e + 1;
    return s;
  }
  static ObjPtr bytes(std::string v) { auto o = make(Kind::Bytes); o->s = std::move(v); return o; }
  static ObjPtr global(std::string name) { auto o = make(Kind::Global); o->s = std::move(name); return o; }
  void long_bytes(size_t n) {
    const char* p = take(n);
    if (n > 8) {  // e.g. the legacy format's magic number: keep the raw little-endian bytes
      push(bytes(std::string(p, n)));
      return;
    }
    uint64_t v = 0;
    for (size_t k = 0; k < n; ++k) v |= static_cast<uint64_t>(static_cast<uint8_t>(p[k])) << (8 * k);
    if (n > 0 && n < 8 && (static_cast<uint8_t>(p[n - 1]) & 0x80)) v |= ~0ull << (8 * n);  // sign-extend
    push(integer(static_cast<int64_t>(v)));
  }
  void push(ObjPtr o) { stack_.push_back(std::move(o)); }
  ObjPtr& top() {
    if (stack_.empty()) fail("stack underflow");
    return stack_.back();
  }
  ObjPtr pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) fail("stack underflow");
    auto o = stack_.back();
    stack_.pop_back();
    return o;
  }
  std::vector<ObjPtr> pop_mark() {
    if (marks_.empty()) fail("MARK missing");
    size_t m = marks_.back();
    marks_.pop_back();
    std::vector<ObjPtr> v(stack_.begin() + static_cast<long>(m), stack_.end());
    stack_.resize(m);
    return v;
  }
  ObjPtr& target(Kind k, const char* op) {
    auto& t = top();
    if (t->kind != k) fail(std::string(op) + " on a " + t->type_name());
    return t;
  }
  void fill_dict(const ObjPtr& d, const std::vector<ObjPtr>& items) {
    if (items.size() % 2) fail("odd number of dict items");
    for (size_t k = 0; k < items.size(); k += 2) d->dict.emplace_back(items[k], items[k + 1]);
  }
  void memo(size_t idx) {
    // Python numbers the memo from 0, one entry per PUT: an index past the data's length is
    // corrupt, and resizing to it could ask for gigabytes.
    if (idx > d_.size()) fail("memo key " + std::to_string(idx) + " out of range");
    if (memo_.size() <= idx) memo_.resize(idx + 1);
    memo_[idx] = top();
  }
  ObjPtr recall(size_t idx) {
    if (idx >= memo_.size() || !memo_[idx]) fail("memo key " + std::to_string(idx) + " missing");
    return memo_[idx];
  }
  static int64_t as_int(const ObjPtr& o) { return o->kind == Kind::Bool ? o->b : o->i; }
  std::vector<int64_t> int_tuple(const ObjPtr& o) {
    if (o->kind != Kind::Tuple && o->kind != Kind::List) fail("expected a size/stride tuple, found " + o->type_name());
    std::vector<int64_t> v;
    for (auto& x : o->items) v.push_back(as_int(x));
    return v;
  }

  ObjPtr reduce(const ObjPtr& fn, const ObjPtr& args) {
    if (fn->kind != Kind::Global) fail("REDUCE on a " + fn->type_name());
    const std::string& f = fn->s;
    const auto& a = args->items;
    if (f == "collections.OrderedDict") {
      auto d = dict(true);
      if (!a.empty() && a[0]->kind == Kind::List)  // OrderedDict([(k, v), ...])
        for (auto& kv : a[0]->items)
          if (kv->items.size() == 2) d->dict.emplace_back(kv->items[0], kv->items[1]);
      return d;
    }
    if (f == "torch._utils._rebuild_tensor_v2" || f == "torch._utils._rebuild_tensor") {
      if (a.size() < 4 || a[0]->kind != Kind::Tensor) fail(f + " with unexpected arguments");
      auto sizes = int_tuple(a[2]);
      auto strides = int_tuple(a[3]);
      const at::Tensor& storage = a[0]->tensor;
      const int64_t off = as_int(a[1]);
      if (sizes.size() != strides.size() || off < 0 ||
          std::any_of(sizes.begin(), sizes.end(), [](int64_t v) { return v < 0; }) ||
          std::any_of(strides.begin(), strides.end(), [](int64_t v) { return v < 0; }))
        fail("tensor with sizes " + shape_str(std::vector<long>(sizes.begin(), sizes.end())) + ", strides " +
             shape_str(std::vector<long>(strides.begin(), strides.end())) + " and offset " + std::to_string(off));
      // The last element's index + 1 must lie in the storage; checked term by term, so that
      // corrupt sizes cannot overflow the sum.
      const int64_t has = storage.numel();
      const bool empty = std::find(sizes.begin(), sizes.end(), 0) != sizes.end();
      bool fits = empty || off < has;
      int64_t need = off + 1;  // <= has from here on
      for (size_t k = 0; fits && !empty && k < sizes.size(); ++k) {
        if (strides[k] && sizes[k] - 1 > (has - need) / strides[k]) fits = false;
        else need += (sizes[k] - 1) * strides[k];
      }
      if (!fits)
        fail("tensor of size " + shape_str(std::vector<long>(sizes.begin(), sizes.end())) + " at offset " +
             std::to_string(off) + " lies past its storage's " + std::to_string(has) + " elements");
      return tensor(storage.as_strided(sizes, strides, off));
    }
    if (f == "torch._utils._rebuild_parameter" || f == "torch._utils._rebuild_parameter_with_state") {
      if (a.empty() || a[0]->kind != Kind::Tensor) fail(f + " without a tensor");
      return a[0];
    }
    if (f == "_codecs.encode" && !a.empty() && a[0]->kind == Kind::Str) {
      // protocol-2 bytes: _codecs.encode(text, 'latin1'); text holds UTF-8 of code points < 256
      std::string out;
      const std::string& s = a[0]->s;
      for (size_t k = 0; k < s.size(); ++k) {
        auto c = static_cast<uint8_t>(s[k]);
        if (c < 0x80) out.push_back(static_cast<char>(c));
        else if (k + 1 < s.size()) { out.push_back(static_cast<char>(((c & 0x03) << 6) | (static_cast<uint8_t>(s[k + 1]) & 0x3f))); ++k; }
      }
      return bytes(out);
    }
    if (f.rfind("torch._utils._rebuild_", 0) == 0)
      fail("unsupported tensor kind " + f + " (quantized, sparse or meta tensors cannot be loaded)");
    if (f == "builtins.set" || f == "builtins.frozenset") {
      auto s = make(Kind::Set);
      if (!a.empty()) s->items = a[0]->items;
      return s;
    }
    // Anything else (argparse.Namespace, numpy scalars, torch.device...) is kept opaque:
    // it does not stop a checkpoint from loading unless someone asks for it as weights.
    auto o = make(Kind::Instance);
    o->s = f;
    o->items = a;
    return o;
  }
  void build(const ObjPtr& obj, const ObjPtr& st) {
    if (obj->kind == Kind::Instance) { obj->state = st; return; }
    // OrderedDict state dicts carry `_metadata` as instance state; tensors may carry
    // Python attributes. Neither matters for weights.
  }

  std::string_view d_;
  size_t& pos_;
  const PersistentLoad& load_;
  const std::string& where_;
  std::vector<ObjPtr> stack_;
  std::vector<size_t> marks_;
  std::vector<ObjPtr> memo_;
};

}  // namespace

ObjPtr unpickle(std::string_view data, size_t& pos, const PersistentLoad& load, const std::string& where) {
  return Unpickler(data, pos, load, where).run();
}

// ---------------------------------------------------------------------------------------
// Pickler (protocol 2)

namespace {

class Pickler {
 public:
  explicit Pickler(const std::function<std::string(const at::Tensor&)>& save) : save_(save) {}
  std::string run(const ObjPtr& o) {
    out_ += "\x80\x02";
    write(o);
    out_ += '.';
    return out_;
  }

 private:
  void raw_u32(uint32_t v) { out_.append(reinterpret_cast<const char*>(&v), 4); }
  void unicode(const std::string& s) {
    out_ += 'X';
    raw_u32(static_cast<uint32_t>(s.size()));
    out_ += s;
  }
  void integer(int64_t v) {
    if (v >= INT32_MIN && v <= INT32_MAX) {
      out_ += 'J';
      int32_t x = static_cast<int32_t>(v);
      out_.append(reinterpret_cast<const char*>(&x), 4);
    } else {
      out_ += "\x8a\x08";
      out_.append(reinterpret_cast<const char*>(&v), 8);
    }
  }
  void global(const std::string& mod, const std::string& name) { out_ += "c" + mod + "\n" + name + "\n"; }
  void write(const ObjPtr& o) {
    switch (o->kind) {
      case Kind::None: out_ += 'N'; break;
      case Kind::Bool: out_ += o->b ? '\x88' : '\x89'; break;
      case Kind::Int: integer(o->i); break;
      case Kind::Float: {
        out_ += 'G';
        uint64_t bits;
        std::memcpy(&bits, &o->f, 8);
        for (int k = 7; k >= 0; --k) out_ += static_cast<char>((bits >> (8 * k)) & 0xff);
        break;
      }
      case Kind::Str: unicode(o->s); break;
      case Kind::Bytes: out_ += 'B'; raw_u32(static_cast<uint32_t>(o->s.size())); out_ += o->s; break;
      case Kind::List:
        out_ += "](";
        for (auto& x : o->items) write(x);
        out_ += 'e';
        break;
      case Kind::Tuple:
        out_ += '(';
        for (auto& x : o->items) write(x);
        out_ += 't';
        break;
      case Kind::Dict:
        if (o->ordered) { global("collections", "OrderedDict"); out_ += ")R"; }
        else out_ += '}';
        out_ += '(';
        for (auto& kv : o->dict) { write(kv.first); write(kv.second); }
        out_ += 'u';
        break;
      case Kind::Tensor: tensor(o->tensor); break;
      default: throw Error("cannot save a Python " + o->type_name() + " in a checkpoint");
    }
  }
  void tensor(const at::Tensor& t0) {
    at::Tensor t = t0.detach().to(at::kCPU).contiguous();
    std::string key = save_(t);
    global("torch._utils", "_rebuild_tensor_v2");
    out_ += '(';
    // persistent id: ('storage', torch.<Type>Storage, key, 'cpu', numel)
    out_ += '(';
    unicode("storage");
    global("torch", storage_class(t.scalar_type()));
    unicode(key);
    unicode("cpu");
    integer(t.numel());
    out_ += "tQ";
    integer(0);
    out_ += '(';
    for (auto s : t.sizes()) integer(s);
    out_ += "t(";
    for (auto s : t.strides()) integer(s);
    out_ += "t\x89";
    global("collections", "OrderedDict");
    out_ += ")R";
    out_ += "tR";
  }
  const std::function<std::string(const at::Tensor&)>& save_;
  std::string out_;
};

}  // namespace

std::string pickle(const ObjPtr& obj, const std::function<std::string(const at::Tensor&)>& save_storage) {
  return Pickler(save_storage).run(obj);
}

}  // namespace cp2::py

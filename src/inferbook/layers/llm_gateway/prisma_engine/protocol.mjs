// Translation between the two request protocols of Prisma's query engine.
//
// prisma-client-py 0.15 talks to its engine in the older "GraphQL protocol": a tiny, fixed subset of
// GraphQL that it renders itself (see prisma/_builder.py), e.g.
//
//   mutation {
//     result: createOneLiteLLM_VerificationToken
//     (
//       data: {
//         token: "abc"
//         models: [
//           "gpt-4"
//         ]
//       }
//     )
//     {
//       token
//       litellm_budget_table(
//         where: { budget_id: "b" }
//       )
//       {
//         budget_id
//       }
//     }
//   }
//
// The WebAssembly build of the same engine only accepts the newer "JSON protocol"
// ({modelName, action, query: {arguments, selection}}). Everything here is pure (no I/O), so the
// server in query-engine.mjs stays small and this file can be reasoned about on its own.

// ---------------------------------------------------------------------------------------------
// 1. A parser for the GraphQL subset prisma-client-py emits.
//
// Values are always JSON literals (the client renders them with json.dumps), so strings and numbers
// are read with JSON.parse; commas are insignificant, as in GraphQL.

const PUNCTUATION = new Set(['{', '}', '(', ')', '[', ']', ':']);

function tokenize(text) {
  const tokens = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === ' ' || c === '\n' || c === '\t' || c === '\r' || c === ',') {
      i += 1;
    } else if (PUNCTUATION.has(c)) {
      tokens.push({ kind: c });
      i += 1;
    } else if (c === '"') {
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      tokens.push({ kind: 'value', value: JSON.parse(text.slice(i, j + 1)) });
      i = j + 1;
    } else {
      const match = /^-?\d+(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i, i + 64)) ?? /^[_A-Za-z][_0-9A-Za-z]*/.exec(text.slice(i));
      if (!match) throw new ProtocolError(`unexpected character ${JSON.stringify(c)} at offset ${i}`);
      const word = match[0];
      if (/^-?\d+$/.test(word) && !Number.isSafeInteger(Number(word))) {
        tokens.push({ kind: 'value', value: word }); // keep all digits; a BigInt input is tagged from this string
      } else if (/^-?\d/.test(word)) tokens.push({ kind: 'value', value: Number(word) });
      else if (word === 'true' || word === 'false' || word === 'null') tokens.push({ kind: 'value', value: JSON.parse(word) });
      else tokens.push({ kind: 'name', value: word });
      i += word.length;
    }
  }
  return tokens;
}

export class ProtocolError extends Error {}

class Parser {
  constructor(text) {
    this.tokens = tokenize(text);
    this.at = 0;
  }

  peek() {
    return this.tokens[this.at]?.kind;
  }

  take(kind) {
    const token = this.tokens[this.at];
    if (!token || token.kind !== kind) {
      throw new ProtocolError(`expected ${kind} but found ${token ? token.kind : 'end of query'}`);
    }
    this.at += 1;
    return token.value;
  }

  // query|mutation { alias: field(args) { selection } }
  document() {
    this.take('name'); // "query" or "mutation": the JSON protocol infers this from the action
    this.take('{');
    const field = this.field();
    this.take('}');
    return field;
  }

  field() {
    let name = this.take('name');
    let alias = name;
    if (this.peek() === ':') {
      this.take(':');
      name = this.take('name');
    }
    const args = this.peek() === '(' ? this.object('(', ')') : {};
    const selection = this.peek() === '{' ? this.selection() : null;
    return { alias, name, args, selection };
  }

  selection() {
    const fields = [];
    this.take('{');
    while (this.peek() !== '}') fields.push(this.field());
    this.take('}');
    return fields;
  }

  object(open, close) {
    const result = {};
    this.take(open);
    while (this.peek() !== close) {
      const key = this.take('name');
      this.take(':');
      result[key] = this.value();
    }
    this.take(close);
    return result;
  }

  value() {
    const kind = this.peek();
    if (kind === 'value') return this.take('value');
    if (kind === '{') return this.object('{', '}');
    if (kind === '[') {
      const items = [];
      this.take('[');
      while (this.peek() !== ']') items.push(this.value());
      this.take(']');
      return items;
    }
    throw new ProtocolError(`expected a value but found ${kind ?? 'end of query'}`);
  }
}

export function parseGraphQL(text) {
  return new Parser(text).document();
}

// ---------------------------------------------------------------------------------------------
// 2. Schema knowledge, from the DMMF of the datamodel (prisma-schema-wasm's get_dmmf).
//
// The GraphQL protocol sends every Json value as a string (json.dumps of the value). In the JSON
// protocol an untagged string stays a *string*, so a Json column would store "\"{...}\"" instead of
// the object: Json (and, to be explicit, DateTime/BigInt/Decimal/Bytes) inputs must be tagged
// {"$type": T, "value": v}. Which argument is of which type is only known from the schema.

const TAGGED_SCALARS = new Set(['Json', 'DateTime', 'BigInt', 'Decimal', 'Bytes']);

export class SchemaIndex {
  // dmmf: the parsed output of get_dmmf. Only the small lookup tables are kept.
  constructor(dmmf) {
    const byName = (types) => new Map(types.map((t) => [t.name, new Map(t.fields.map((f) => [f.name, f]))]));
    const { inputObjectTypes, outputObjectTypes, enumTypes } = dmmf.schema;
    this.inputs = byName(Object.values(inputObjectTypes).flat());
    this.outputs = byName(Object.values(outputObjectTypes).flat());
    this.enums = new Map(Object.values(enumTypes).flat().map((e) => [e.name, new Set(e.values)]));
    this.models = new Set(dmmf.datamodel.models.map((m) => m.name));
  }

  // The root field (e.g. "findUniqueLiteLLM_VerificationTokenOrThrow") of Query or Mutation.
  rootField(name) {
    return this.outputs.get('Query')?.get(name) ?? this.outputs.get('Mutation')?.get(name);
  }

  // Tag values whose declared input type needs it; `inputTypes` are the DMMF alternatives.
  tag(value, inputTypes) {
    if (value === null || value === undefined || !inputTypes) return value;
    if (Array.isArray(value)) return value.map((item) => this.tag(item, inputTypes));
    if (typeof value === 'object') {
      const candidates = inputTypes
        .filter((t) => t.location === 'inputObjectTypes')
        .map((t) => this.inputs.get(t.type))
        .filter(Boolean);
      const out = {};
      for (const [key, item] of Object.entries(value)) {
        const field = candidates.map((fields) => fields.get(key)).find(Boolean);
        out[key] = field ? this.tag(item, field.inputTypes) : item;
      }
      return out;
    }
    const isEnumValue = inputTypes.some((t) => t.location === 'enumTypes' && this.enums.get(t.type)?.has(value));
    const scalar = inputTypes.find((t) => t.location === 'scalar' && TAGGED_SCALARS.has(t.type));
    if (scalar && !isEnumValue && (typeof value === 'string' || typeof value === 'number')) {
      return { $type: scalar.type, value: String(value) };
    }
    return value;
  }
}

// ---------------------------------------------------------------------------------------------
// 3. GraphQL-protocol request -> JSON-protocol request.

// Longest first, so that "findUnique" wins over "findU..."-like prefixes of other actions.
const ACTIONS = [
  'findUnique', 'findFirst', 'findMany', 'createOne', 'createMany', 'updateOne', 'updateMany', 'upsertOne',
  'deleteOne', 'deleteMany', 'aggregate', 'groupBy',
];
const RAW_ACTIONS = new Set(['executeRaw', 'queryRaw']);

// "findFirstLiteLLM_UserTableOrThrow" -> { action: "findFirstOrThrow", modelName: "LiteLLM_UserTable" }
export function splitOperation(name, schema) {
  if (RAW_ACTIONS.has(name)) return { action: name, modelName: undefined };
  for (const action of ACTIONS) {
    if (!name.startsWith(action)) continue;
    let modelName = name.slice(action.length);
    let suffix = '';
    if (modelName.endsWith('OrThrow') && !schema.models.has(modelName)) {
      modelName = modelName.slice(0, -'OrThrow'.length);
      suffix = 'OrThrow';
    }
    if (schema.models.has(modelName)) return { action: action + suffix, modelName };
  }
  throw new ProtocolError(`unknown operation ${name}`);
}

// GraphQL selection set -> JSON protocol selection, with relation arguments tagged too.
function toSelection(fields, outputType, schema) {
  const selection = {};
  const outputFields = schema.outputs.get(outputType);
  for (const field of fields ?? []) {
    const declared = outputFields?.get(field.name);
    const hasArgs = Object.keys(field.args).length > 0;
    if (!field.selection && !hasArgs) {
      selection[field.name] = true;
      continue;
    }
    const nested = {};
    if (hasArgs) nested.arguments = tagArguments(field.args, declared?.args, schema);
    nested.selection = toSelection(field.selection, declared?.outputType?.type, schema);
    selection[field.name] = nested;
  }
  return selection;
}

function tagArguments(args, declaredArgs, schema) {
  const out = {};
  for (const [key, value] of Object.entries(args)) {
    const declared = declaredArgs?.find((a) => a.name === key);
    out[key] = declared ? schema.tag(value, declared.inputTypes) : value;
  }
  return out;
}

// Returns { request, alias, operation }: the JSON-protocol request plus what is needed to shape
// the answer back into GraphQL-protocol form ({"data": {alias: ...}}).
export function translateQuery(graphql, schema) {
  const field = parseGraphQL(graphql);
  const { action, modelName } = splitOperation(field.name, schema);
  if (RAW_ACTIONS.has(action)) {
    // The raw parameters are already a JSON string in both protocols.
    return { alias: field.alias, operation: field.name, raw: true, request: { action, query: { arguments: field.args, selection: {} } } };
  }
  const root = schema.rootField(field.name);
  const request = {
    modelName,
    action,
    query: {
      arguments: tagArguments(field.args, root?.args, schema),
      selection: toSelection(field.selection, root?.outputType?.type, schema),
    },
  };
  return { alias: field.alias, operation: field.name, raw: false, request };
}

// ---------------------------------------------------------------------------------------------
// 4. JSON-protocol answer -> GraphQL-protocol answer.

// The JSON protocol tags DateTime/Json/BigInt/Decimal/Bytes results; the GraphQL protocol returned
// them as bare strings (Json as its JSON text), which is what prisma-client-py's models parse.
export function untag(value) {
  if (Array.isArray(value)) return value.map(untag);
  if (value !== null && typeof value === 'object') {
    if (typeof value.$type === 'string' && 'value' in value && Object.keys(value).length === 2) return value.value;
    const out = {};
    for (const [key, item] of Object.entries(value)) out[key] = untag(item);
    return out;
  }
  return value;
}

// One engine answer (already parsed) -> GraphQL-protocol shape. Errors pass through: the engine
// reports them as {"errors": [{"error", "user_facing_error": {error_code, message, meta}}]}, which is
// the shape prisma-client-py maps to UniqueViolationError (P2002), RecordNotFoundError (P2025), ...
export function shapeResult(answer, translated) {
  if (answer.errors) return { errors: answer.errors };
  const data = answer.data?.[translated.operation];
  return { data: { [translated.alias]: translated.raw ? data : untag(data) } };
}

// Transaction calls answer "{}" / {"id": ...} on success and a bare user-facing error on failure.
export function transactionError(answer) {
  if (!answer || !answer.error_code) return null;
  // prisma-client-py tells an expired transaction from other P2028 errors by the start of "error".
  const detail = answer.meta?.error ?? answer.message;
  return { errors: [{ error: detail, user_facing_error: answer }] };
}

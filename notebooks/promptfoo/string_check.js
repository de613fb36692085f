// Notebook 07's testing criterion, OpenAI's string_check grader with operation "eq" on
//   input "{{ sample.output_json.FIELD }}", reference "{{ item.FIELD }}",
// as a Promptfoo javascript assertion (https://www.promptfoo.dev/docs/configuration/expected-outputs/javascript/).
// As in ftkit.graders: the answer must parse as JSON (else the sample cannot be graded: 0), the
// field must be there, and its value -- a string as it is, anything else as JSON text -- must
// equal the test case's label exactly.
function stringCheck(field) {
  return (output, context) => {
    let answer;
    try {
      answer = typeof output === "string" ? JSON.parse(output) : output;
    } catch (e) {
      return { pass: false, score: 0, reason: `${field}: the answer is not JSON` };
    }
    const value = answer !== null && typeof answer === "object" && !Array.isArray(answer) ? answer[field] : undefined;
    if (value === undefined) {
      return { pass: false, score: 0, reason: `${field}: not in the answer` };
    }
    const text = typeof value === "string" ? value : JSON.stringify(value);
    const expected = context.vars[field];
    const pass = text === expected;
    return { pass, score: pass ? 1 : 0, reason: `${field}: ${JSON.stringify(text)} ${pass ? "==" : "!="} ${JSON.stringify(expected)}` };
  };
}

module.exports = {
  category: stringCheck("category"),
  urgency: stringCheck("urgency"),
  product: stringCheck("product"),
};

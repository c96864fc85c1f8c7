// Operator: the nodes whose operator is the connected wallet, their stake and earnings;
// claim, stake, unstake and withdraw through the wallet.
import { leasesOf, listNodes } from "../api.js";
import { claim, claimable, credits, nodeOnChain, requestUnstake, stake, withdrawCredits, withdrawUnstaked } from "../chain.js";
import { facts, h, message, parseTokens, status, tokens, when } from "../ui.js";
import { state as wallet } from "../wallet.js";

export async function operatorPage(main, config) {
  const title = h("h1", { tabindex: "-1" }, "Operator");
  if (!wallet.account) {
    main.replaceChildren(title, message("warn", "Connect the operator's wallet to see its nodes."));
    return;
  }
  const resultBox = h("div", { id: "operator-result", "aria-live": "assertive" });
  const mine = (await listNodes()).filter((n) => n.operator.toLowerCase() === wallet.account.toLowerCase());
  const credit = await credits(wallet.account);

  async function act(work) {
    resultBox.replaceChildren();
    try {
      status("Confirm in your wallet");
      resultBox.replaceChildren(message("ok", await work()));
      const done = resultBox.firstChild;
      await operatorPage(main, config);
      main.append(done);
    } catch (error) {
      resultBox.replaceChildren(message("error", error.message));
    } finally {
      status("");
    }
  }

  const cards = await Promise.all(mine.map(async (n) => {
    const [chain, leases] = await Promise.all([nodeOnChain(n.address), leasesOf({ node: n.address })]);
    const owed = await Promise.all(leases.map(async (l) => [l.id, await claimable(l.id)]));
    const total = owed.reduce((sum, [, amount]) => sum + amount, 0n);
    const amount = h("input", { id: `amount-${n.address}`, type: "text", inputmode: "decimal", value: "1" });
    const unlocked = chain.unbonding > 0n && Number(chain.unbondingEndsAt) * 1000 <= Date.now();
    return h("div", { class: "card", "data-node": n.address }, h("h2", {}, "Node ", h("span", { class: "mono" }, n.address)), facts([
      ["Active stake", tokens(chain.stake)],
      ["Locked stake (unbonding, still slashable)", chain.unbonding > 0n ? [tokens(chain.unbonding), " until ", when(Number(chain.unbondingEndsAt))] : tokens(0n)],
      ["Leases served", String(leases.length)],
      ["Missed re-attestations", String(chain.missedAttestations)],
      ["Claimable earnings", h("span", { class: "claimable" }, tokens(total))],
    ]), h("div", { class: "row" },
      h("button", { type: "button", class: "claim", disabled: total === 0n, onclick: () => act(async () => {
        let sum = 0n;
        for (const [leaseId, value] of owed) if (value > 0n) sum += await claim(leaseId);
        return `Claimed ${tokens(sum)}.`;
      }) }, "Claim earnings")),
    h("form", { class: "row", "aria-label": `Stake of node ${n.address}`, onsubmit: (e) => e.preventDefault() },
      h("label", { for: `amount-${n.address}` }, "Amount (tokens)", amount),
      h("button", { type: "button", onclick: () => act(async () => { const v = parseTokens(amount.value); await stake(n.address, v); return `Staked ${tokens(v)}.`; }) }, "Stake (approve + stake)"),
      h("button", { type: "button", class: "secondary", onclick: () => act(async () => { const v = parseTokens(amount.value); await requestUnstake(n.address, v); return `Unstaking ${tokens(v)}: it unlocks after the unbonding delay.`; }) }, "Unstake"),
      h("button", { type: "button", class: "secondary", disabled: !unlocked, onclick: () => act(async () => { await withdrawUnstaked(n.address); return "Withdrew the unlocked stake."; }) }, "Withdraw unlocked stake")));
  }));
  main.replaceChildren(title,
    mine.length === 0 ? h("p", {}, `No node has ${wallet.account} as its operator.`) : "",
    ...cards,
    h("div", { class: "card" }, facts([["Credits to withdraw (payouts others triggered)", tokens(credit)]]),
      h("button", { type: "button", disabled: credit === 0n, onclick: () => act(async () => { await withdrawCredits(); return `Withdrew ${tokens(credit)}.`; }) }, "Withdraw credits")),
    resultBox);
}

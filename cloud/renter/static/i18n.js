// zh and en. The language is the renter's choice (the switch, kept in localStorage), else the
// first of navigator.languages that is zh or en, else what the server chose from Accept-Language.

const S = {
  brand: ['Power bank', '充电宝'],
  account: ['Account', '我的'],
  other_lang: ['中文', 'English'],
  lang_label: ['{lang}, switch the language', '{lang}，切换语言'],
  loading: ['Loading…', '加载中…'],
  offline: ['You are offline. Renting and your account need the network.', '网络已断开。租借和账户需要网络。'],
  not_found: ['There is nothing at this address.', '此页面不存在。'],
  home_title: ['Rent a power bank', '租借充电宝'],
  home_scan: ["Scan the QR code on a cabinet's screen to rent there.", '扫描机柜屏幕上的二维码即可在那里租借。'],
  find_nearby: ['Find a cabinet nearby', '查找附近的机柜'],
  your_rental: ['Your rental', '当前租借'],
  see_rental: ['See your rental', '查看当前租借'],
  cabinet: ['Cabinet {id}', '机柜 {id}'],
  ready_0: ['No pack is ready here right now.', '这里现在没有可借的充电宝。'],
  ready_1: ['1 pack ready now', '现在有 1 个充电宝可借'],
  ready_n: ['{n} packs ready now', '现在有 {n} 个充电宝可借'],
  free_n: ['{n} free slots to return', '{n} 个空位可归还'],
  open_now: ['Open now', '营业中'],
  closed_now: ['Closed now', '已打烊'],
  hours: ['Opening hours: {h}', '营业时间：{h}'],
  cab_online: ['Online', '在线'],
  cab_offline: ['Offline', '离线'],
  cabinet_offline: [
    'This cabinet is offline right now, so the app cannot rent here. At its screen you can rent with an offline pass (Account).',
    '此机柜暂时离线，无法通过应用租借。您可以在机柜屏幕上使用离线通行证租借（见“我的”）。',
  ],
  price: ['Price', '价格'],
  hold: ['Hold', '预授权'],
  hold_why: ['{m} held, released when you return', '预授权 {m}，归还后释放'],
  hold_more: [
    'The hold stands for the pack while you have it. You pay only the fee; the rest is released.',
    '预授权仅在您借用期间作为担保。您只需支付租金，其余部分将被释放。',
  ],
  rent: ['Rent', '租借'],
  no_cabinet: ['There is no cabinet {id}.', '没有编号为 {id} 的机柜。'],
  other_cabinets: ['Cabinets nearby with packs ready', '附近有充电宝可借的机柜'],
  signin_title: ['Sign in or sign up', '登录或注册'],
  signin_why: ['Sign in to rent. A new phone number or email makes a new account.', '登录后即可租借。新的手机号或邮箱会创建新账户。'],
  tab_phone: ['Phone', '手机号'],
  tab_email: ['Email', '邮箱'],
  phone_label: ['Mobile number with country code', '手机号（含国家代码）'],
  phone_hint: ['For example +8613800138000', '例如 +8613800138000'],
  send_code: ['Send code', '发送验证码'],
  code_sent: ['We sent a 6-digit code to {p}.', '6 位验证码已发送至 {p}。'],
  code_label: ['6-digit code', '6 位验证码'],
  verify: ['Sign in with the code', '使用验证码登录'],
  email_label: ['Email', '邮箱'],
  password_label: ['Password', '密码'],
  signin: ['Sign in', '登录'],
  signup: ['Create account', '注册新账户'],
  pay_title: ['Payment method', '支付方式'],
  card_label: ['Card (sandbox test card)', '银行卡（沙盒测试卡）'],
  card_tok_ok: ['Test card that works', '可用的测试卡'],
  card_tok_decline: ['Test card that is declined', '会被拒绝的测试卡'],
  card_tok_insufficient: ['Test card without enough funds', '余额不足的测试卡'],
  card_tok_expired: ['Expired test card', '已过期的测试卡'],
  save_card: ['Save card', '保存银行卡'],
  card_saved: ['Card saved.', '银行卡已保存。'],
  has_card: ['A card is on file.', '已绑定银行卡。'],
  no_card_yet: ['No card on file yet.', '尚未绑定银行卡。'],
  saved_methods: ['Saved payment methods', '已保存的支付方式'],
  no_methods: ['None saved.', '暂无。'],
  remove: ['Remove', '删除'],
  remove_named: ['Remove {name}', '删除 {name}'],
  continue: ['Continue', '继续'],
  back: ['Back', '返回'],
  try_again: ['Try again', '重试'],
  change_card: ['Change card', '更换银行卡'],
  phase_sending: ['Asking the cabinet…', '正在联系机柜…'],
  phase_sending_text: ['Your pack will come out in a moment.', '充电宝即将弹出。'],
  phase_presenting: ['A pack is coming out now', '充电宝正在弹出'],
  phase_presenting_text: [
    "Take it from the slot that lights up; the cabinet's screen shows its number.",
    '请从亮灯的仓口取出，机柜屏幕会显示仓口号。',
  ],
  phase_confirming: ['Confirm the hold in your payment app', '请在支付应用中确认预授权'],
  phase_confirming_text: ['{m} will be held. Confirm it within {t}.', '将预授权 {m}，请在 {t} 内确认。'],
  phase_refused: ['The cabinet cannot hand out packs right now', '机柜暂时无法出借充电宝'],
  phase_refused_text: [
    'Nothing is charged: the hold is released in a moment. Please try another cabinet nearby.',
    '不会扣费，预授权稍后释放。请尝试附近的其他机柜。',
  ],
  nothing_out: ['Nothing came out?', '没有弹出？'],
  nothing_out_text: [
    'Do not pull on the slots. If no pack comes out, the rental is cancelled by itself within {t} and the hold is released: nothing is charged. Then try again, or another cabinet nearby.',
    '请勿用力拉拽仓口。如果没有弹出充电宝，租借将在 {t} 内自动取消并释放预授权，不会扣费。之后可以重试，或前往附近的其他机柜。',
  ],
  taken: ['You took the pack from slot {slot}.', '您已从 {slot} 号仓口取出充电宝。'],
  aborted_not_taken: ['The pack was not taken', '充电宝未被取走'],
  aborted_not_taken_text: [
    'Slot {slot} opened, but the pack was not taken in time, so the cabinet kept it. Nothing is charged.',
    '{slot} 号仓口已打开，但充电宝未在规定时间内被取走，机柜已将其收回。不会扣费。',
  ],
  aborted_no_rentable_battery: ['No pack could be handed out', '没有可出借的充电宝'],
  aborted_no_rentable_battery_text: [
    'The cabinet had no charged pack to give. Nothing is charged. Try a cabinet nearby.',
    '机柜没有已充满的充电宝可借。不会扣费。请尝试附近的机柜。',
  ],
  aborted_lock_jammed: ['The slot did not open', '仓口未能打开'],
  aborted_lock_jammed_text: [
    'The cabinet could not open a slot; it has been reported. Nothing is charged.',
    '机柜未能打开仓口，已上报维修。不会扣费。',
  ],
  aborted_interrupted: ['The cabinet restarted', '机柜已重启'],
  aborted_interrupted_text: ['The cabinet restarted before you took a pack. Nothing is charged.', '在您取走充电宝之前机柜重启了。不会扣费。'],
  aborted_storage_unwritable: ['The cabinet cannot rent right now', '机柜暂时无法租借'],
  aborted_storage_unwritable_text: ['It has been reported. Nothing is charged. Try a cabinet nearby.', '已上报维修。不会扣费。请尝试附近的机柜。'],
  aborted_cabinet_timeout: ['The cabinet did not answer', '机柜没有响应'],
  aborted_cabinet_timeout_text: [
    'It may be offline. Nothing is charged. Try again in a while, or use a cabinet nearby.',
    '机柜可能已离线。不会扣费。请稍后重试，或前往附近的机柜。',
  ],
  aborted_not_confirmed: ['The hold was not confirmed', '预授权未确认'],
  aborted_not_confirmed_text: ['Nothing is charged. You can rent again.', '不会扣费。您可以重新租借。'],
  aborted_hold_refused: ['Your payment method was refused', '支付方式被拒绝'],
  aborted_hold_refused_text: ['Nothing is charged. Change the payment method and try again.', '不会扣费。请更换支付方式后重试。'],
  aborted_other: ['The rental was cancelled', '租借已取消'],
  aborted_other_text: ['Nothing is charged.', '不会扣费。'],
  released: ['Hold released: {m}', '已释放预授权：{m}'],
  releasing: ['The hold of {m} is being released.', '预授权 {m} 正在释放。'],
  active_title: ['Rental running', '租借中'],
  time: ['Time', '时长'],
  fee_so_far: ['Fee so far', '当前费用'],
  fee_next: ['{m} in {d}', '{d} 后为 {m}'],
  next_fee: ['Next', '下一档'],
  pack: ['Pack', '充电宝'],
  rented_at: ['Rented at', '租借地点'],
  return_title: ['Return it at any cabinet', '可在任意机柜归还'],
  return_text: [
    'Push the pack into an empty slot of any cabinet. The rental ends as soon as that cabinet tells us.',
    '将充电宝推入任意机柜的空仓口。机柜通知我们后，租借即结束。',
  ],
  return_offline: [
    'A cabinet that is offline still takes the pack: the rental ends when it is back online, at the time you returned it.',
    '离线的机柜也可以归还：它恢复联网后，租借按您归还的时间结束。',
  ],
  nearby_title: ['Cabinets nearby', '附近的机柜'],
  nearby_for_return: ['Cabinets nearby with free slots', '附近有空位的机柜'],
  locating: ['Finding where you are…', '正在定位…'],
  location_off: ['Location is off: showing cabinets near the cabinet you rented at.', '未开启定位：显示您租借机柜附近的机柜。'],
  location_needed: ['Allow location to see cabinets near you.', '请允许定位以查看您附近的机柜。'],
  no_nearby: ['No cabinet found nearby.', '附近没有找到机柜。'],
  away: ['{d} away', '距离 {d}'],
  ready_short: ['{n} ready', '{n} 个可借'],
  free_short: ['{n} free', '{n} 个空位'],
  map_label: ['Map of cabinets nearby', '附近机柜的地图'],
  map_missing: ['The map is not available; the list shows every cabinet.', '地图不可用；列表中显示了所有机柜。'],
  marker: ['{name}: {ready}, {free}', '{name}：{ready}，{free}'],
  you_are_here: ['You are here', '您的位置'],
  receipt_title: ['Receipt', '收据'],
  returned_to: ['Returned at', '归还地点'],
  duration: ['Duration', '时长'],
  fee: ['Fee', '租金'],
  captured: ['Charged', '已扣款'],
  refunded: ['Refunded', '已退款'],
  paid: ['Paid', '实付'],
  hold_released: ['Hold released', '已释放预授权'],
  payment_due: ['Not paid yet: we try your card again automatically.', '尚未支付：我们会自动重新扣款。'],
  purchased: ['You kept the pack: it is yours now.', '您未归还充电宝，已视为购买。'],
  thanks: ['Thank you! The pack is returned.', '谢谢！充电宝已归还。'],
  report_problem: ['Report a problem', '反馈问题'],
  account_title: ['Account', '我的账户'],
  signed_in_as: ['Signed in as {who}', '当前账户：{who}'],
  rentals: ['Rentals', '租借记录'],
  no_rentals: ['No rentals yet.', '暂无租借记录。'],
  details: ['Details', '详情'],
  st_pending: ['Starting', '正在开始'],
  st_active: ['Running', '租借中'],
  st_closed: ['Returned', '已归还'],
  st_purchased: ['Kept', '已购买'],
  st_aborted: ['Cancelled', '已取消'],
  dispute_title: ['Report a problem with this rental', '反馈此次租借的问题'],
  reason_label: ['What went wrong?', '遇到了什么问题？'],
  amount_label: ['Amount to give back, in {cur} (optional)', '申请退款金额（{cur}，选填）'],
  send: ['Send', '提交'],
  dispute_sent: ['Thank you. We look at it and answer you.', '谢谢，我们会尽快处理并回复您。'],
  disputes: ['Your reports', '我的反馈'],
  dispute_status: ['{status}, opened {when}', '{status}，提交于 {when}'],
  ds_open: ['Open', '处理中'],
  ds_resolving: ['Being resolved', '处理中'],
  ds_refunded: ['Refunded', '已退款'],
  ds_rejected: ['Declined', '已驳回'],
  pass_title: ['Offline pass', '离线通行证'],
  pass_text: [
    "For a cabinet that is offline: hold this code to its reader. Valid until {when}, for {n} rental(s). The card's hold is placed now.",
    '适用于离线的机柜：将此二维码对准机柜的扫码器。有效期至 {when}，可租借 {n} 次。现在会在银行卡上预授权。',
  ],
  pass_about: [
    'For a cabinet that is offline: its code reader accepts this pass without the network.',
    '适用于离线的机柜：机柜的扫码器无需联网即可识别此通行证。',
  ],
  get_pass: ['Get an offline pass', '获取离线通行证'],
  show_pass: ['Show my offline pass', '显示我的离线通行证'],
  pass_alt: ['QR code of your offline pass', '您的离线通行证二维码'],
  methods: ['Payment methods', '支付方式'],
  signout: ['Sign out', '退出登录'],
  delete_account: ['Delete account', '注销账户'],
  delete_confirm: [
    'Delete your account? Your personal data is erased; receipts are kept anonymously for the books.',
    '确定注销账户？您的个人信息将被删除；收据将匿名保留用于记账。',
  ],
  deleted: ['Your account was deleted.', '您的账户已注销。'],
  err_card_declined: ['Your card was declined.', '您的银行卡被拒绝。'],
  err_insufficient_funds: ['Your card does not have enough funds for the hold.', '您的银行卡余额不足以完成预授权。'],
  err_expired_card: ['Your card has expired.', '您的银行卡已过期。'],
  err_no_card: ['Add a payment method first.', '请先添加支付方式。'],
  err_debt: [
    'An earlier rental is not paid yet ({m}). It is charged again automatically; you can change the card.',
    '之前的租借尚未支付（{m}）。系统会自动重新扣款；您也可以更换银行卡。',
  ],
  err_open_rental: ['You already have a rental running.', '您已有进行中的租借。'],
  err_unknown_cabinet: ['This cabinet does not rent packs.', '此机柜不提供租借。'],
  err_login_failed: ['Wrong email or password.', '邮箱或密码错误。'],
  err_already_registered: ['This email already has an account: sign in.', '该邮箱已注册，请直接登录。'],
  err_throttled: ['Too many tries. Wait a few minutes and try again.', '尝试次数过多，请几分钟后再试。'],
  err_code: ['That code is wrong or has expired.', '验证码错误或已过期。'],
  err_network: ['No connection. Try again.', '无网络连接，请重试。'],
  err_generic: ['Something went wrong: {msg}', '出现问题：{msg}'],
  err_open_dispute: ['This rental already has an open report.', '此次租借已有处理中的反馈。'],
};

const KEY = 'renter.lang';
let current = 'en';

export function pickLanguage(server) {
  let saved = null;
  try {
    saved = localStorage.getItem(KEY);
  } catch (e) {
    saved = null;
  }
  if (saved === 'zh' || saved === 'en') return saved;
  for (const tag of navigator.languages || [navigator.language || '']) {
    const primary = String(tag).toLowerCase().split('-')[0];
    if (primary === 'zh' || primary === 'en') return primary;
  }
  return server === 'zh' ? 'zh' : 'en';
}

export function setLang(lang, remember) {
  current = lang === 'zh' ? 'zh' : 'en';
  document.documentElement.lang = current === 'zh' ? 'zh-CN' : 'en';
  if (remember) {
    try {
      localStorage.setItem(KEY, current);
    } catch (e) {
      /* not kept: the next visit follows the phone's language again */
    }
  }
}

export function lang() {
  return current;
}

export function t(key, vars) {
  const entry = S[key];
  let text = entry ? entry[current === 'zh' ? 1 : 0] : key;
  if (vars) {
    for (const [name, value] of Object.entries(vars)) text = text.split(`{${name}}`).join(String(value));
  }
  return text;
}

export function has(key) {
  return key in S;
}
